import type { DeployIntent } from '../crdt/types.ts';

const GiB = 2 ** 30;

/** A deploy intent for the simulator's scan and stand-in tests: 1 GiB and `cpuMilli` per replica. */
export function intent(
  replicas: number,
  cpuMilli: number,
  strategy: string,
  extra: Record<string, unknown> = {},
): Omit<DeployIntent, 'id' | 'revision'> {
  return {
    name: 'w',
    replicas,
    strategy,
    spec: { resources: { cpu: { milli: cpuMilli }, memoryBytes: GiB }, ...extra },
  };
}
