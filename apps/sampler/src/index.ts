export { samplerProgram } from './program';
