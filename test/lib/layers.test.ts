// The layering in DESIGN.md, checked on the sources: lib/ imports neither node/ nor cluster/; node/ not cluster/.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { layerViolations } from '../../scripts/check-layers.js';

test('lib <- node <- cluster: no import goes the wrong way', () => {
  assert.equal(layerViolations(), []);
});

test.run();
