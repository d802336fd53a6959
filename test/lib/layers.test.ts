// The layering in DESIGN.md, checked on the sources: lib/ imports neither node/ nor cluster/; node/ not
// cluster/; and the sans-I/O cores use no I/O module, timer, clock or randomness.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SANS_IO_CORES, coreViolations, layerViolations } from '../../scripts/check-layers.js';

test('lib <- node <- cluster: no import goes the wrong way', () => {
  assert.equal(layerViolations(), []);
});

test('the sans-I/O cores import no I/O module and use no timer, clock or randomness', () => {
  assert.ok(SANS_IO_CORES.length >= 10);
  assert.equal(coreViolations(), []);
});

test('the core check catches each kind of violation, and ignores comments and messages', () => {
  const directory = mkdtempSync(join(tmpdir(), 'statecraft-layers-'));
  try {
    const file = (name: string, text: string) => {
      writeFileSync(join(directory, name), text);
      return name;
    };
    const bad = [
      file('fs.ts', "import { readFileSync } from 'node:fs';\n"),
      file('ws.ts', "import { WebSocket } from 'ws';\n"),
      file('timer.ts', 'export function f(): void {\n  setTimeout(() => {}, 1);\n}\n'),
      file('clock.ts', 'export const now = () => Date.now();\n'),
      file('performance.ts', 'export const now = () => performance.now();\n'),
      file('random.ts', 'export const pick = () => Math.random();\n'),
    ];
    const violations = coreViolations(bad, directory);
    assert.is(violations.length, bad.length, violations.join('\n'));
    assert.match(violations.join('\n'), /fs\.ts:1: .*'node:fs'/);
    assert.match(violations.join('\n'), /timer\.ts:2: .*a timer/);
    assert.match(violations.join('\n'), /clock\.ts:1: .*the clock/);
    assert.match(violations.join('\n'), /random\.ts:1: .*randomness/);
    const fine = file(
      'fine.ts',
      [
        "import { createHash } from 'node:crypto';",
        '// Never call Date.now() here: the shell passes nowMs.',
        '/* setTimeout belongs to the shell */',
        "export const why = 'Math.random() would break seeds';",
        'export const hash = (text: string) => createHash(\'sha256\').update(text).digest(\'hex\');',
        '',
      ].join('\n'),
    );
    assert.equal(coreViolations([fine], directory), []);
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

test.run();
