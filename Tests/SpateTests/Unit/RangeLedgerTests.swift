@testable import Spate
import Testing

@Suite("RangeSet")
struct RangeSetTests {
    @Test func insertMergesOverlappingAndAdjacentRanges() {
        var set = RangeSet()
        set.insert(ByteRange(10, 20))
        set.insert(ByteRange(30, 40))
        set.insert(ByteRange(20, 30))
        #expect(set.ranges == [ByteRange(10, 40)])
        set.insert(ByteRange(0, 5))
        set.insert(ByteRange(35, 50))
        #expect(set.ranges == [ByteRange(0, 5), ByteRange(10, 50)])
        #expect(set.count == 45)
    }

    @Test func removeSplitsRanges() {
        var set = RangeSet([ByteRange(0, 100)])
        set.remove(ByteRange(10, 20))
        set.remove(ByteRange(90, 200))
        #expect(set.ranges == [ByteRange(0, 10), ByteRange(20, 90)])
        set.remove(ByteRange(0, 10))
        #expect(set.ranges == [ByteRange(20, 90)])
    }

    @Test func containmentAndContiguousEnd() {
        let set = RangeSet([ByteRange(0, 10), ByteRange(20, 30)])
        #expect(set.contains(ByteRange(2, 8)))
        #expect(!set.contains(ByteRange(5, 25)))
        #expect(set.contains(9) && !set.contains(10) && set.contains(20))
        #expect(set.contiguousEnd(from: 0) == 10)
        #expect(set.contiguousEnd(from: 12) == 12)
        #expect(set.contiguousEnd(from: 25) == 30)
        #expect(set.intersects(ByteRange(9, 11)) && !set.intersects(ByteRange(10, 20)))
    }

    /// Property: RangeSet agrees with a plain boolean array under random inserts and removes.
    @Test func matchesABitmapModel() {
        var rng = SeededGenerator(label: "RangeSet model")
        for _ in 0..<200 {
            let size = Int.random(in: 1...300, using: &rng)
            var model = [Bool](repeating: false, count: size)
            var set = RangeSet()
            for _ in 0..<40 {
                let a = Int.random(in: 0..<size, using: &rng)
                let b = Int.random(in: a...size, using: &rng)
                let insert = Bool.random(using: &rng)
                if insert { set.insert(ByteRange(Int64(a), Int64(b))) } else { set.remove(ByteRange(Int64(a), Int64(b))) }
                for i in a..<b { model[i] = insert }
            }
            for i in 0..<size { #expect(set.contains(Int64(i)) == model[i]) }
            #expect(set.count == Int64(model.filter { $0 }.count))
            // Sorted, disjoint and non-adjacent.
            for (x, y) in zip(set.ranges, set.ranges.dropFirst()) { #expect(x.end < y.start) }
        }
    }
}

@Suite("RangeLedger")
struct RangeLedgerTests {
    @Test func handsOutFromTheLowestOffsetAndCompletes() {
        var ledger = RangeLedger(size: 10)
        let a = ledger.assign(maxBytes: 4)!
        let b = ledger.assign(maxBytes: 4)!
        let c = ledger.assign(maxBytes: 4)!
        #expect(a.range == ByteRange(0, 4) && b.range == ByteRange(4, 8) && c.range == ByteRange(8, 10))
        #expect(ledger.assign(maxBytes: 4) == nil)
        ledger.finish(b.id, doneThrough: 8)
        #expect(ledger.watermark == 0)
        ledger.finish(a.id, doneThrough: 4)
        #expect(ledger.watermark == 8)
        ledger.finish(c.id, doneThrough: 10)
        #expect(ledger.isComplete)
        #expect(ledger.invariantViolation() == nil)
    }

    @Test func aPartialRequestReturnsOnlyItsRemainderToPending() {
        var ledger = RangeLedger(size: 100)
        let a = ledger.assign(maxBytes: 100)!
        ledger.finish(a.id, doneThrough: 37)
        #expect(ledger.doneBytes == 37)
        let again = ledger.assign(maxBytes: 1000)!
        #expect(again.range == ByteRange(37, 100), "received bytes are never fetched twice")
    }

    @Test func emptyFileIsCompleteAtOnce() {
        var ledger = RangeLedger(size: 0)
        #expect(ledger.isComplete)
        #expect(ledger.assign(maxBytes: 1) == nil)
    }

    @Test func alreadyDoneBytesAreNotHandedOut() {
        var ledger = RangeLedger(size: 100, alreadyDone: RangeSet([ByteRange(0, 50), ByteRange(60, 70)]))
        #expect(ledger.assign(maxBytes: 100)?.range == ByteRange(50, 60))
        #expect(ledger.assign(maxBytes: 100)?.range == ByteRange(70, 100))
        #expect(ledger.invariantViolation() == nil)
    }

    /// Property: under any interleaving of assignments, steals (some given back at once) and
    /// (partial) completions, assignments never overlap each other or done bytes, the covering invariant holds after every step,
    /// and the file ends complete.
    @Test func invariantsHoldUnderRandomSchedules() {
        var rng = SeededGenerator(label: "RangeLedger schedules")
        for _ in 0..<300 {
            let size = Int64.random(in: 0...5000, using: &rng)
            var ledger = RangeLedger(size: size)
            var live: [RangeLedger.Assignment] = []
            var steps = 0
            while !ledger.isComplete {
                steps += 1
                #expect(steps < 100_000)
                if live.isEmpty || (live.count < 8 && Bool.random(using: &rng)),
                   let a = ledger.assign(maxBytes: Int64.random(in: 1...700, using: &rng)) {
                    for other in live { #expect(!(ledger.range(of: other.id) ?? other.range).overlaps(a.range)) }
                    #expect(!ledger.done.intersects(a.range))
                    live.append(a)
                } else if !live.isEmpty && live.count < 8 && Int.random(in: 0..<4, using: &rng) == 0,
                          let steal = ledger.steal(positions: [:], minimumBytes: 1) {
                    // An idle connection splits a request; sometimes the host refuses the thief
                    // at once and its bytes go back to the victim.
                    if Bool.random(using: &rng) {
                        #expect(ledger.giveBack(steal.assignment.id, to: steal.victim) == steal.assignment.range.end)
                    } else {
                        live.append(steal.assignment)
                    }
                } else if !live.isEmpty {
                    let i = Int.random(in: 0..<live.count, using: &rng)
                    let a = live.remove(at: i)
                    let range = ledger.range(of: a.id) ?? a.range
                    // Sometimes the request delivers everything, sometimes only part.
                    let through = Bool.random(using: &rng) ? range.end : Int64.random(in: range.start...range.end, using: &rng)
                    ledger.finish(a.id, doneThrough: through)
                }
                #expect(ledger.invariantViolation() == nil)
                let w = ledger.watermark
                #expect(ledger.done.contains(ByteRange(0, w)))
            }
            #expect(ledger.doneBytes == size)
        }
    }
}

@Suite("RequestSizer")
struct RequestSizerTests {
    @Test func fixedSizeIsUsedAsGiven() {
        let sizer = RequestSizer(fileSize: 1 << 30, connections: 16, fixedBytes: 12345)
        #expect(sizer.nextRequestBytes(unassigned: 1 << 30) == 12345)
        #expect(sizer.nextRequestBytes(unassigned: 10) == 12345)
    }

    @Test func automaticSizeIsClampedAndShrinksAtTheTail() {
        let sizer = RequestSizer(fileSize: 1 << 30, connections: 16, fixedBytes: nil)
        #expect(sizer.baseBytes == RequestSizer.maximumAutomaticBytes)
        #expect(sizer.nextRequestBytes(unassigned: 1 << 30) == sizer.baseBytes)
        let tail = sizer.nextRequestBytes(unassigned: 16 << 20)
        #expect(tail == 1 << 20)
        #expect(sizer.nextRequestBytes(unassigned: 1000) == RequestSizer.minimumAutomaticBytes)
        let small = RequestSizer(fileSize: 1000, connections: 16, fixedBytes: nil)
        #expect(small.baseBytes >= RequestSizer.minimumAutomaticBytes)
        #expect(small.usefulConnections(fileSize: 1000) == 1)
    }

    /// Loopback (a reply wait of 1 ms): unchanged. 80 ms: one equal share of the work per
    /// connection before the speed is known, then at least 40 reply waits of transfer, and a
    /// last request takes the whole share rather than leave a small one behind.
    @Test func roundTripsSetTheLeastLengthOfARequest() {
        let sizer = RequestSizer(fileSize: 1 << 30, connections: 16, fixedBytes: nil)
        let gib: Int64 = 1 << 30
        #expect(sizer.nextRequestBytes(unassigned: gib, connections: 1, replyWait: 0.001, allowed: 16) == sizer.baseBytes)
        #expect(sizer.nextRequestBytes(unassigned: gib, connections: 1, speed: 10e6, replyWait: 0.001, allowed: 16) == 4_980_736,
                "0.5 s at 10 MB/s, in 64 KiB steps")
        #expect(sizer.nextRequestBytes(unassigned: gib, connections: 1, replyWait: 0.08, allowed: 16) == gib / 16,
                "the first connection takes a sixteenth")
        #expect(sizer.nextRequestBytes(unassigned: gib - gib / 16, connections: 2, replyWait: 0.08, outstanding: gib / 16,
                                       allowed: 16) == gib / 16, "so does the second: the share counts what is in flight")
        let timed = sizer.nextRequestBytes(unassigned: gib, connections: 16, speed: 1e6, replyWait: 0.08, allowed: 16)
        #expect(timed == 3_145_728, "40 × 80 ms at 1 MB/s = 3.2 MB, in 64 KiB steps")
        #expect(sizer.nextRequestBytes(unassigned: 50 << 20, connections: 16, speed: 1e6, replyWait: 0.08,
                                       outstanding: 14 << 20, allowed: 16) == 4 << 20,
                "a share under two timed requests is taken whole")
        #expect(sizer.nextRequestBytes(unassigned: 1000, connections: 16, replyWait: 0.2, allowed: 16)
                == RequestSizer.minimumAutomaticBytes)
        let fixed = RequestSizer(fileSize: gib, connections: 16, fixedBytes: 1 << 20)
        #expect(fixed.nextRequestBytes(unassigned: gib, replyWait: 0.2) == 1 << 20, "--chunk-size is used as given")
    }

    @Test func connectionsAreCappedByTheNumberOfRequests() {
        let sizer = RequestSizer(fileSize: 10, connections: 32, fixedBytes: 3)
        #expect(sizer.usefulConnections(fileSize: 10) == 4)
        #expect(RequestSizer(fileSize: 0, connections: 8, fixedBytes: 3).usefulConnections(fileSize: 0) == 1)
    }
}
