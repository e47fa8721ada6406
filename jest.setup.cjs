// Runs before every test file: quiet tfjs's cpu-backend banner (tests choose backends explicitly).
const tf = require('@tensorflow/tfjs-core');
require('@tensorflow/tfjs-backend-cpu');
tf.setBackend('cpu');
const cpu = tf.findBackend('cpu');
if (cpu) cpu.firstUse = false;
