/// How a download's journal is doing, as the download sees it (`Journal.noteInFlight`).
///
/// A failing commit (the disk is full, the file system went read-only) means a resume would
/// fetch more again than it should; the download says so once, and stops with a local I/O
/// error when commits keep failing (`failAfter` in a row), instead of running on without the
/// resumability the user asked for.
struct JournalStatus: Sendable, Equatable {
    static let failAfter = 3

    /// Commits that failed in a row.
    private(set) var failuresInARow = 0
    private(set) var totalFailures = 0
    private(set) var lastError: SpateError?

    mutating func succeeded() { failuresInARow = 0 }

    mutating func failed(_ error: SpateError) {
        failuresInARow += 1
        totalFailures += 1
        lastError = error
    }

    /// The records were committed, but compacting the journal failed: worth a notice (the
    /// journal grows until a compaction works), never a reason to stop.
    mutating func compactionFailed(_ error: SpateError) {
        failuresInARow = 0
        totalFailures += 1
        lastError = error
    }

    /// What the download does about it, given how many failures it already told the user of.
    enum Verdict: Sendable, Equatable {
        case fine
        /// Say this once (the first failure).
        case notice(String)
        case stop(SpateError)
    }

    func verdict(path: String, reportedFailures: Int) -> Verdict {
        guard let lastError, totalFailures > reportedFailures else { return .fine }
        if failuresInARow >= Self.failAfter {
            return .stop(SpateError(.localIO, "the resume journal \(path) cannot be written (\(lastError.message)); use --no-journal to download without one"))
        }
        if reportedFailures == 0 {
            return .notice("the resume journal could not be written (\(lastError.message)); retrying at the next commit")
        }
        return .fine
    }
}
