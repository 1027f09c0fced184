/**
 * Deterministic, realistic user records for the benchmarks: about 350 bytes
 * of JSON each (name, email, phone, department, title, status, groups,
 * access levels, one or two CSN cards). Record `i` depends only on the seed
 * and `i`, so a parent process and its children, or two benches, generate
 * exactly the same roster without passing it around, and a run can be
 * replayed.
 */

/** The seed every bench uses unless told otherwise. */
export const BENCH_SEED = 0x5eed_2026

/** One user record as the public API takes it. */
export interface BenchRecord {
  readonly id: string
  readonly name: string
  readonly email: string
  readonly phone: string
  readonly department: string
  readonly title: string
  readonly status: 'active' | 'disabled'
  readonly groups: readonly string[]
  readonly accessLevels: readonly string[]
  readonly cards: ReadonlyArray<{ readonly type: 'csn'; readonly value: string }>
}

// prettier-ignore
const FIRST_NAMES = [
  'Aisha', 'Alejandro', 'Amelia', 'Anders', 'Ananya', 'Benjamin', 'Camille', 'Chen', 'Chloe',
  'Daniel', 'Dmitri', 'Elena', 'Emeka', 'Fatima', 'François', 'Gabriel', 'Hana', 'Hiroshi',
  'Ingrid', 'Isabella', 'Jakub', 'Javier', 'Kwame', 'Leila', 'Liam', 'Lucía', 'Mateo', 'Mei',
  'Mohammed', 'Nadia', 'Noah', 'Olga', 'Oliver', 'Priya', 'Rafael', 'Sakura', 'Samuel', 'Sofia',
  'Tomasz', 'Yusuf', 'Zanele', 'Zoë',
]

// prettier-ignore
const LAST_NAMES = [
  'Abiodun', 'Andersson', 'Bakker', 'Berg', 'Chen', 'Costa', 'Dubois', 'Fernández', 'Fischer',
  'García', 'Hansen', 'Ivanova', 'Jensen', 'Kowalski', 'Kumar', 'Larsen', 'Lefebvre', 'Mendes',
  'Müller', 'Nakamura', 'Nguyen', 'Novak', 'Okafor', "O'Brien", 'Petrov', 'Rossi', 'Santos',
  'Schmidt', 'Silva', 'Singh', 'Tanaka', 'Van der Berg', 'Wang', 'Williams', 'Yilmaz', 'Zhang',
]

// prettier-ignore
const DEPARTMENTS = [
  'Engineering', 'Operations', 'Finance', 'Human Resources', 'Facilities', 'Security',
  'Sales', 'Marketing', 'Legal', 'Logistics', 'Research & Development', 'Customer Support',
]

// prettier-ignore
const TITLES = [
  'Technician', 'Senior Engineer', 'Shift Supervisor', 'Analyst', 'Site Manager', 'Contractor',
  'Maintenance Lead', 'Security Officer', 'Account Executive', 'Administrator', 'Intern',
  'Operations Coordinator', 'Health & Safety Advisor',
]

// prettier-ignore
const ACCESS_LEVELS = [
  'al-main-entrance', 'al-car-park', 'al-floor-1', 'al-floor-2', 'al-floor-3', 'al-floor-4',
  'al-server-room', 'al-warehouse', 'al-lab', 'al-roof', 'al-canteen', 'al-after-hours',
]

/** Mixes a seed and an index into one well-spread 32-bit state (splitmix32's finaliser). */
function mix(seed: number, index: number): number {
  let z = (seed ^ Math.imul(index + 1, 0x9e3779b9)) >>> 0
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0
  return (z ^ (z >>> 16)) >>> 0
}

/**
 * mulberry32: a small, fast PRNG with a 32-bit state. Good enough to make
 * records look varied; nothing here needs statistical quality.
 */
export function prng(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const pick = <T>(next: () => number, list: readonly T[]): T =>
  list[Math.floor(next() * list.length)] as T

const digits = (next: () => number, count: number): string => {
  let out = ''
  for (let i = 0; i < count; i++) out += Math.floor(next() * 10).toString()
  return out
}

const hex = (next: () => number, bytes: number): string => {
  let out = ''
  for (let i = 0; i < bytes; i++)
    out += Math.floor(next() * 256)
      .toString(16)
      .padStart(2, '0')
  return out
}

/** Picks `count` distinct items of `list` (count <= list.length), in list order. */
const pickSome = <T>(next: () => number, list: readonly T[], count: number): T[] => {
  const chosen = new Set<number>()
  while (chosen.size < count) chosen.add(Math.floor(next() * list.length))
  return [...chosen].sort((a, b) => a - b).map((i) => list[i] as T)
}

/** The id of record `index`: an employee number, zero-padded so ids sort like indexes. */
export const recordId = (index: number): string => `E${index.toString().padStart(7, '0')}`

/** Record number `index` of the roster generated from `seed`. */
export function makeRecord(index: number, seed: number = BENCH_SEED): BenchRecord {
  const next = prng(mix(seed, index))
  const first = pick(next, FIRST_NAMES)
  const last = pick(next, LAST_NAMES)
  const local = `${first}.${last}`
    .normalize('NFD')
    .replace(/[^A-Za-z.]/g, '')
    .toLowerCase()
  const groupCount = 2 + Math.floor(next() * 4)
  const groups: string[] = []
  for (let i = 0; i < groupCount; i++) groups.push(`grp-${digits(next, 4)}`)
  const cardCount = next() < 0.8 ? 1 : 2
  const cards: Array<{ type: 'csn'; value: string }> = []
  for (let i = 0; i < cardCount; i++) cards.push({ type: 'csn', value: hex(next, 7) })
  const record: BenchRecord = {
    id: recordId(index),
    name: `${first} ${last}`,
    email: `${local}${index}@corp.example.com`,
    phone: `+44 20 7946 ${digits(next, 4)}`,
    department: pick(next, DEPARTMENTS),
    title: pick(next, TITLES),
    status: next() < 0.93 ? 'active' : 'disabled',
    groups: [...new Set(groups)],
    accessLevels: pickSome(next, ACCESS_LEVELS, 2 + Math.floor(next() * 3)),
    cards,
  }
  // Records reach a server as JSON (admin tools, imports), so they arrive as
  // freshly parsed objects with flat strings. A round trip gives them that
  // shape here too; the template strings above would otherwise stay as
  // V8 cons-strings, which are bigger and would skew the heap bench.
  return JSON.parse(JSON.stringify(record)) as BenchRecord
}

/** Records `from` .. `from + count - 1`. */
export function makeRecords(from: number, count: number, seed: number = BENCH_SEED): BenchRecord[] {
  const out: BenchRecord[] = []
  for (let i = from; i < from + count; i++) out.push(makeRecord(i, seed))
  return out
}

/** Mean JSON size in bytes (UTF-8) of the first `count` records, id included. */
export function meanRecordBytes(count: number, seed: number = BENCH_SEED): number {
  let total = 0
  for (let i = 0; i < count; i++) total += Buffer.byteLength(JSON.stringify(makeRecord(i, seed)))
  return total / count
}
