export { trainerProgram } from './program';
