'use strict';

// One JSON object per line on stdout, read by messenger/sim/botframework_test.go. Writes to a
// pipe are synchronous in Node.js on Linux, so lines are whole and in order.
module.exports = function print(line) {
  process.stdout.write(JSON.stringify(line) + '\n');
};
