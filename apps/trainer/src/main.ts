#!/usr/bin/env node
import { runProgram } from '@aptp/core';
import { trainerProgram } from './program';

// main only dispatches (STYLE.md §3 CLI).
runProgram(trainerProgram, process.argv.slice(2)).then((code) => process.exit(code));
