import { describe, expect, it } from 'vitest';
import { AGENT_V8_FLAGS, applyAgentV8Flags } from '../node/run.ts';

describe('agent V8 flags', () => {
  it('applies the agent’s V8 settings unless the process was started with them', () => {
    expect(AGENT_V8_FLAGS).toContain('--max-inlined-bytecode-size-cumulative=300');
    expect(applyAgentV8Flags([])).toEqual([...AGENT_V8_FLAGS]);
    // An operator's own value on Node's command line wins (either spelling).
    expect(applyAgentV8Flags(['--max-inlined-bytecode-size-cumulative=920'])).toEqual([]);
    expect(applyAgentV8Flags(['--max_inlined_bytecode_size_cumulative=500'])).toEqual([]);
  });
});
