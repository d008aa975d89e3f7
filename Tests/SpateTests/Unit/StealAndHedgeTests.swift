@testable import Spate
import Testing

@Suite("RangeLedger stealing and hedging")
struct StealAndHedgeTests {
    @Test func stealTakesTheFarHalfOfTheLargestRemainder() throws {
        var ledger = RangeLedger(size: 1000)
        let a = ledger.assign(maxBytes: 600)!
        let b = ledger.assign(maxBytes: 600)!  // [600, 1000)
        let stolen = ledger.steal(positions: [a.id: 100, b.id: 900], minimumBytes: 50)
        let steal = try #require(stolen)
        #expect(steal.victim == a.id)
        #expect(steal.victimEnd == 350)
        #expect(steal.assignment.range == ByteRange(350, 600))
        #expect(ledger.range(of: a.id) == ByteRange(0, 350))
        #expect(ledger.invariantViolation() == nil)
        // Too little left anywhere: nothing to steal.
        #expect(ledger.steal(positions: [a.id: 340, b.id: 990, steal.assignment.id: 590], minimumBytes: 50) == nil)
    }

    /// An ordered stream steals from the head of its window, not from the largest remainder.
    @Test func aStreamStealsFromTheHead() throws {
        var ledger = RangeLedger(size: 1000)
        let a = ledger.assign(maxBytes: 300)!  // [0, 300)
        let b = ledger.assign(maxBytes: 700)!  // [300, 1000)
        let positions = [a.id: 0, b.id: 300] as [RangeLedger.AssignmentID: Int64]
        var copy = ledger
        let largest = copy.steal(positions: positions, minimumBytes: 50)
        #expect(largest?.victim == b.id, "largest remainder by default")
        let stolen = ledger.steal(positions: positions, minimumBytes: 50, headFirst: true)
        let head = try #require(stolen)
        #expect(head.victim == a.id && head.assignment.range == ByteRange(150, 300))
        #expect(ledger.invariantViolation() == nil)
    }

    @Test func aVictimThatRanPastTheSplitCountsOnlyItsShortenedRange() {
        var ledger = RangeLedger(size: 1000)
        let a = ledger.assign(maxBytes: 1000)!
        let steal = ledger.steal(positions: [a.id: 0], minimumBytes: 10)!
        // The victim wrote up to 700 before it saw its new end (identical bytes, harmless).
        let result = ledger.finish(a.id, doneThrough: 700)
        #expect(result.complete)
        #expect(ledger.done.ranges == [ByteRange(0, 500)])
        ledger.finish(steal.assignment.id, doneThrough: 1000)
        #expect(ledger.isComplete)
    }

    @Test func theHedgeWinsAndThePrimaryIsAbandoned() throws {
        var ledger = RangeLedger(size: 100)
        let a = ledger.assign(maxBytes: 100)!
        let hedged = ledger.hedge(a.id, from: 40)
        let h = try #require(hedged)
        #expect(h.range == ByteRange(40, 100))
        #expect(ledger.hedge(a.id, from: 50) == nil, "one hedge per assignment")
        let hedgeDone = ledger.finish(h.id, doneThrough: 100)
        #expect(hedgeDone.complete && hedgeDone.abandon == [a.id])
        let primaryDone = ledger.finish(a.id, doneThrough: 55)
        #expect(primaryDone.complete)
        #expect(ledger.isComplete)
        #expect(ledger.invariantViolation() == nil)
    }

    @Test func thePrimaryWinsAndTheHedgeIsAbandoned() {
        var ledger = RangeLedger(size: 100)
        let a = ledger.assign(maxBytes: 100)!
        let h = ledger.hedge(a.id, from: 60)!
        let primaryDone = ledger.finish(a.id, doneThrough: 100)
        #expect(primaryDone.complete && primaryDone.abandon == [h.id])
        ledger.finish(h.id, doneThrough: 70)
        #expect(ledger.isComplete && ledger.hedges.isEmpty && ledger.inFlight.isEmpty)
    }

    @Test func aFailedPrimaryHandsItsRestToTheHedge() {
        var ledger = RangeLedger(size: 100)
        let a = ledger.assign(maxBytes: 100)!
        let h = ledger.hedge(a.id, from: 30)!
        ledger.finish(a.id, doneThrough: 45)
        #expect(ledger.pending.isEmpty, "the hedge covers what is left")
        #expect(ledger.range(of: h.id) == ByteRange(45, 100))
        #expect(!ledger.isHedge(h.id))
        ledger.finish(h.id, doneThrough: 100)
        #expect(ledger.isComplete)
    }

    /// Property: random interleavings of assign, steal, hedge, progress and finish (with the
    /// abandon requests honoured) keep the covering invariant, never mark a byte done that no
    /// request wrote, and always end with the whole file done.
    @Test func randomSchedulesWithStealingAndHedging() {
        var rng = SeededGenerator(label: "steal+hedge schedules")
        for _ in 0..<300 {
            let size = Int64.random(in: 1...4000, using: &rng)
            var ledger = RangeLedger(size: size)
            var written = [Bool](repeating: false, count: Int(size))
            // In-flight requests: id -> (request start, current position, requested end).
            var live: [RangeLedger.AssignmentID: (start: Int64, position: Int64, end: Int64)] = [:]
            var abandoned: Set<RangeLedger.AssignmentID> = []
            var steps = 0
            func start(_ a: RangeLedger.Assignment) {
                live[a.id] = (a.range.start, a.range.start, a.range.end)
            }
            while !ledger.isComplete || !live.isEmpty {
                steps += 1
                if steps > 200_000 { Issue.record("no progress"); break }
                let roll = Int.random(in: 0..<10, using: &rng)
                if roll < 3, live.count < 6 {
                    if let a = ledger.assign(maxBytes: Int64.random(in: 1...900, using: &rng)) {
                        start(a)
                    } else if let s = ledger.steal(positions: live.mapValues(\.position), minimumBytes: Int64.random(in: 1...50, using: &rng)) {
                        live[s.victim]!.end = s.victimEnd  // the victim's sink stops at its new end
                        start(s.assignment)
                    } else if let victim = live.keys.filter({ !ledger.isHedge($0) && ledger.inFlight[$0] != nil }).randomElement(using: &rng),
                              let h = ledger.hedge(victim, from: live[victim]!.position) {
                        start(h)
                    }
                } else if roll < 7, let id = live.keys.randomElement(using: &rng) {
                    // Progress: the request writes some more bytes (never past what it asked for).
                    var r = live[id]!
                    let step = Int64.random(in: 0...200, using: &rng)
                    let next = min(r.end, r.position + step)
                    for i in r.position..<next { written[Int(i)] = true }
                    r.position = next
                    live[id] = r
                } else if let id = live.keys.randomElement(using: &rng) {
                    // The request ends: complete, failed part-way, or abandoned.
                    let r = live.removeValue(forKey: id)!
                    let result = ledger.finish(id, doneThrough: r.position)
                    abandoned.remove(id)
                    for other in result.abandon where live[other] != nil { abandoned.insert(other) }
                }
                #expect(ledger.invariantViolation() == nil)
                // Abandoned requests stop soon.
                for id in abandoned where live[id] != nil && Bool.random(using: &rng) {
                    let r = live.removeValue(forKey: id)!
                    ledger.finish(id, doneThrough: r.position)
                    abandoned.remove(id)
                }
                // A request that has nothing left (and is not abandoned) reports completion.
                for (id, r) in live where r.position == r.end && Bool.random(using: &rng) {
                    live.removeValue(forKey: id)
                    let result = ledger.finish(id, doneThrough: r.position)
                    for other in result.abandon where live[other] != nil { abandoned.insert(other) }
                }
            }
            #expect(ledger.isComplete)
            for r in ledger.done.ranges {
                for i in r.start..<r.end where !written[Int(i)] {
                    Issue.record("byte \(i) marked done but never written (size \(size))")
                    break
                }
            }
        }
    }
}
