#!/usr/bin/env node
import { runProgram } from '@aptp/core';
import { datasetInfoCommand } from './command';

// `datasets data --dataset synthetic --sheet sheet.png` (nx: `npx nx run datasets:data -- --sheet sheet.png`).
runProgram({ name: 'datasets', summary: 'inspect APTP data sets', commands: [datasetInfoCommand] }, process.argv.slice(2)).then((code) => process.exit(code));
