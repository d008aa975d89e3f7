@testable import Spate
import Testing

/// The failures a batch reports: in list order whatever order they happened in, bounded, and
/// the earliest in the list decides the exit code.
@Suite("Batch summary")
struct BatchSummaryTests {
    func file(_ index: Int) -> BatchFile {
        BatchFile(index: index, line: index + 1, url: "http://h/\(index)", path: "/d/\(index)")
    }

    @Test func failuresAreKeptInListOrder() {
        var summary = BatchSummary()
        for (index, kind) in [(7, SpateError.Kind.http), (2, .network), (9, .checksumMismatch), (0, .http)] {
            summary.recordFailure(file(index), SpateError(kind, "file \(index)"))
        }
        #expect(summary.failed == 4)
        #expect(summary.failures.map(\.file.index) == [0, 2, 7, 9])
        #expect(summary.firstFailure?.file.index == 0 && summary.exitCode == SpateError.Kind.http.exitCode)
    }

    /// Past the bound, the files that come first in the list are the ones kept.
    @Test func theBoundKeepsTheEarliestFilesOfTheList() {
        var summary = BatchSummary()
        let count = BatchSummary.maxFailuresKept + 50
        var generator = SeededGenerator(label: "batch-summary")
        for index in (0..<count).shuffled(using: &generator) {
            summary.recordFailure(file(index), SpateError(.http, "file \(index)"))
        }
        #expect(summary.failed == count)
        #expect(summary.failures.map(\.file.index) == Array(0..<BatchSummary.maxFailuresKept))
    }
}
