#!/usr/bin/env node
import { runProgram } from '@aptp/core';
import { samplerProgram } from './program';

// main only dispatches (STYLE.md §3 CLI).
runProgram(samplerProgram, process.argv.slice(2)).then((code) => process.exit(code));
