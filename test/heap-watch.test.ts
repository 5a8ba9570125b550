// The heap watch that replaces incremental marking's memory duties (agent/cli/gc-tuning.ts).
import test from 'ava';
import { HeapWatch, type HeapProbe, type HeapWatchLimits } from '../agent/cli/gc-tuning.ts';

const MiB = 1024 * 1024;
const LIMITS: HeapWatchLimits = { externalBytes: 8 * MiB, busySlackBytes: 16 * MiB, quietSlackBytes: 4 * MiB, quietUtilization: 0.05, quietLooks: 3, settleLooks: 6 };

/** A fake V8: the test sets heap size, external memory and load; a collection brings the heap to `afterGc`. */
function fakeHeap(start: number) {
  const state = { total: start, external: 2 * MiB, externalAfterGc: 2 * MiB, utilization: 0.5, afterGc: start, collections: 0 };
  const probe: HeapProbe = {
    heap: () => ({ total: state.total, external: state.external }),
    utilization: () => state.utilization,
    collect: () => {
      state.collections++;
      state.total = state.afterGc;
      state.external = state.externalAfterGc;
    },
  };
  return { state, watch: new HeapWatch(probe, LIMITS) };
}

test('a busy process is collected when its heap grows past the busy slack, not before', (t) => {
  const { state, watch } = fakeHeap(20 * MiB);
  state.total = 35 * MiB;
  t.is(watch.look(), undefined);
  state.afterGc = 30 * MiB; // the young generation stays at its size while busy
  state.total = 37 * MiB;
  t.is(watch.look(), 'busy');
  t.is(state.collections, 1);
  // The floor is the size after that collection.
  state.total = 45 * MiB;
  t.is(watch.look(), undefined);
  state.total = 47 * MiB;
  t.is(watch.look(), 'busy');
});

test('ArrayBuffers allocated since the last full collection beyond the limit get one, busy or not; buffers still live do not count', (t) => {
  const { state, watch } = fakeHeap(20 * MiB);
  state.external = 10 * MiB;
  t.is(watch.look(), undefined);
  state.external = 11 * MiB;
  state.externalAfterGc = 30 * MiB; // still live (data waiting for a slow reader): the new floor
  t.is(watch.look(), 'external');
  state.external = 37 * MiB;
  t.is(watch.look(), undefined);
  state.external = 39 * MiB;
  t.is(watch.look(), 'external');
  t.is(state.collections, 2);
});

test('after a burst, a quiet process gives memory back: one quiet collection after 3 quiet looks, one settle collection 6 looks later, then none', (t) => {
  const { state, watch } = fakeHeap(20 * MiB);
  state.total = 34 * MiB; // the burst grew the heap (young generation at its maximum, garbage in the old)
  t.is(watch.look(), undefined);
  state.utilization = 0.01;
  t.is(watch.look(), undefined);
  t.is(watch.look(), undefined);
  // V8 keeps its young generation on the first collection (the burst is in its allocation-rate sample).
  state.afterGc = 35 * MiB;
  t.is(watch.look(), 'quiet');
  state.afterGc = 21 * MiB;
  for (let i = 0; i < 5; i++) t.is(watch.look(), undefined);
  t.is(watch.look(), 'settle');
  t.is(state.total, 21 * MiB);
  for (let i = 0; i < 20; i++) t.is(watch.look(), undefined, 'an idle process is left alone');
  t.is(state.collections, 2);
});

test('a burst whose busy collections kept the young generation large is still given back once quiet', (t) => {
  const { state, watch } = fakeHeap(20 * MiB);
  state.afterGc = 45 * MiB;
  state.total = 50 * MiB;
  t.is(watch.look(), 'busy');
  state.utilization = 0.01;
  state.afterGc = 44 * MiB;
  t.is(watch.look(), undefined, 'the look after a collection does not count');
  for (let i = 0; i < 2; i++) t.is(watch.look(), undefined);
  t.is(watch.look(), 'quiet');
  state.afterGc = 21 * MiB;
  for (let i = 0; i < 5; i++) t.is(watch.look(), undefined);
  t.is(watch.look(), 'settle');
  for (let i = 0; i < 10; i++) t.is(watch.look(), undefined);
});

test('the pause of a collection does not count against the quiet that follows it', (t) => {
  let utilization = 0.01;
  let total = 34 * MiB;
  let collections = 0;
  const watch = new HeapWatch(
    {
      heap: () => ({ total, external: 0 }),
      utilization: () => utilization,
      collect: () => {
        collections++;
        total = collections === 1 ? 33 * MiB : 21 * MiB;
        utilization = 0.08; // a 50 ms pause on a loaded machine is 5 % of the next second
      },
    },
    LIMITS,
  );
  total = 40 * MiB;
  t.is(watch.look(), undefined);
  t.is(watch.look(), undefined);
  t.is(watch.look(), 'quiet');
  t.is(watch.look(), undefined);
  utilization = 0.01;
  for (let i = 0; i < 4; i++) t.is(watch.look(), undefined);
  t.is(watch.look(), 'settle');
});

test('a lull shorter than quietLooks is not the end of a burst', (t) => {
  const { state, watch } = fakeHeap(20 * MiB);
  state.total = 30 * MiB;
  for (let i = 0; i < 10; i++) {
    state.utilization = i % 3 === 2 ? 0.5 : 0.01;
    t.is(watch.look(), undefined);
  }
});

test('a settle collection is owed only while the process stays quiet', (t) => {
  const { state, watch } = fakeHeap(20 * MiB);
  state.total = 30 * MiB;
  state.utilization = 0.01;
  for (let i = 0; i < 2; i++) watch.look();
  state.afterGc = 28 * MiB;
  t.is(watch.look(), 'quiet');
  t.is(watch.look(), undefined);
  state.utilization = 0.5;
  t.is(watch.look(), undefined);
  state.utilization = 0.01;
  for (let i = 0; i < 10; i++) t.is(watch.look(), undefined);
});

test('a heap that V8 shrank by itself lowers the floor the growth is measured from', (t) => {
  const { state, watch } = fakeHeap(40 * MiB);
  state.total = 15 * MiB;
  t.is(watch.look(), undefined);
  state.total = 40 * MiB;
  t.is(watch.look(), 'busy');
});

test("start-up's growth, below the quiet slack, is given back the first time the process goes quiet, and only then", (t) => {
  // An agent starting: the young generation grew from 1 to 4 MB of semi-spaces for the start-up's
  // allocations, less than quietSlackBytes, and the idle agent would keep it for good (b149bbf did).
  const { state, watch } = fakeHeap(6 * MiB);
  state.total = 9.5 * MiB;
  t.is(watch.look(), undefined, 'busy starting');
  state.utilization = 0.01;
  t.is(watch.look(), undefined);
  t.is(watch.look(), undefined);
  state.afterGc = 8 * MiB;
  t.is(watch.look(), 'quiet', 'the first quiet streak ends start-up');
  state.afterGc = 6.5 * MiB;
  for (let i = 0; i < 5; i++) t.is(watch.look(), undefined);
  t.is(watch.look(), 'settle', 'then the collection that lets V8 shrink the young generation');
  // After start-up, quiet growth below the slack is left alone, also after a busy spell.
  state.total = 9 * MiB;
  state.utilization = 0.5;
  t.is(watch.look(), undefined);
  state.utilization = 0.01;
  for (let i = 0; i < 20; i++) t.is(watch.look(), undefined);
  t.is(state.collections, 2);
});

test('a process that starts quiet without growing is not collected', (t) => {
  const { state, watch } = fakeHeap(6 * MiB);
  state.utilization = 0.01;
  for (let i = 0; i < 20; i++) t.is(watch.look(), undefined);
  // Growth after that first quiet streak waits for the slack again.
  state.total = 9 * MiB;
  for (let i = 0; i < 10; i++) t.is(watch.look(), undefined);
  t.is(state.collections, 0);
});
