/**
 * A duration as people read it, for messages and events, in the largest
 * unit it reaches (seconds at least), to one decimal: `10 days`,
 * `1.5 days`, `1 hour`, `1.5 minutes`, `0.5 seconds`.
 */
export function durationText(ms: number): string {
  const units: Array<[number, string]> = [
    [86_400_000, 'day'],
    [3_600_000, 'hour'],
    [60_000, 'minute'],
  ]
  const [size, name] = units.find(([unit]) => ms >= unit) ?? [1_000, 'second']
  const n = Math.round((ms / size) * 10) / 10
  return `${n} ${name}${n === 1 ? '' : 's'}`
}
