import Glibc

/// How a batch runs: its session's budgets, how many files at once, what to do on a failure,
/// and the options every file starts from.
public struct BatchOptions: Sendable {
    /// The base directory every destination is inside (`-d`).
    public var directory = "."
    /// Connection budgets shared by every file: a global maximum (`-c`) and one per host
    /// (`--max-per-host`), probes included.
    public var limits = DownloadSession.Limits()
    /// Most files in flight (`-j`); nil: automatic (`automaticFilesInFlight`).
    public var maxFilesInFlight: Int?
    /// Stop at the first failed file: files in flight are cancelled (their journals are kept).
    public var failFast = false
    /// The options every file starts from; the manifest adds its checksum and headers.
    /// `connections` is capped by the per-host budget.
    public var download = DownloadOptions()

    public init() {}

    /// Four times the global connection budget, at least 256: enough small files to keep every
    /// connection busy while earlier ones wait for their group flush (two flushes each: 10,000
    /// files of 0-64 KiB took 1.85 s with 64 in flight, 1.53 s with 256, no faster with more);
    /// a big file takes many connections by itself. A file waiting for a connection holds no
    /// buffer and no descriptor.
    public var automaticFilesInFlight: Int { min(1024, max(256, 4 * limits.maxConnections)) }

    /// The most small files written and waiting for their flushes (`GroupPublisher`), beside
    /// the files in flight (`DownloadBatch.run` says why apart): each holds a descriptor until
    /// it is saved, so at most half the descriptors the process may open, and 4,096.
    static var maxFilesSaving: Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 256 }
        return Int(min(4096, max(64, limit.rlim_cur / 2)))
    }

    public func validate() throws(SpateError) {
        try limits.validate()
        if let maxFilesInFlight, !(1...100_000).contains(maxFilesInFlight) {
            throw .usage("the most files in flight must be between 1 and 100000, not \(maxFilesInFlight)")
        }
        try download.validate()
    }
}

/// One file of a running batch, as events name it.
public struct BatchFile: Sendable, Hashable {
    /// Its position among the batch's files (0-based, in manifest order).
    public let index: Int
    /// Its manifest line (0 for URLs from the command line).
    public let line: Int
    /// The URL, redacted (no credentials, no query values).
    public let url: String
    /// Where it is saved (the base directory joined with its destination).
    public let path: String

    public init(index: Int, line: Int, url: String, path: String) {
        self.index = index
        self.line = line
        self.url = url
        self.path = path
    }
}

/// What a batch reports, in order per file: `queued`, then `skipped` or the download's own
/// events (`.started`, `.progress`, …, `.finished`), or `failed`.
public enum BatchEvent: Sendable {
    case queued(BatchFile)
    /// The file is already complete (a rerun): not fetched.
    case skipped(BatchFile, bytes: Int64)
    case file(BatchFile, DownloadEvent)
    case failed(BatchFile, SpateError)
}

/// The outcome of a batch.
public struct BatchSummary: Sendable {
    public var succeeded = 0
    public var failed = 0
    public var skipped = 0
    /// Files stopped in flight (interrupted, or `failFast`): their journals are kept.
    public var cancelled = 0
    /// Bytes written by this run (skipped files not included).
    public var bytes: Int64 = 0
    public var elapsed: Duration = .zero
    /// The failures of the files that come first in the list (at most `maxFailuresKept`), in
    /// list order: what a person reads against the list, whatever order the files failed in.
    public private(set) var failures: [(file: BatchFile, error: SpateError)] = []
    public static let maxFailuresKept = 1000
    /// Set when the batch stopped early (`failFast`, or cancelled).
    public var stoppedEarly = false
    /// The failure of the earliest file in the manifest (its exit code is the batch's).
    public var firstFailure: (file: BatchFile, error: SpateError)? { failures.first }

    public init() {}

    /// Counts a failed file and keeps its error if it is among the first `maxFailuresKept` of
    /// the list's failures (a later file's is dropped for it when the list is full).
    public mutating func recordFailure(_ file: BatchFile, _ error: SpateError) {
        failed += 1
        var low = 0, high = failures.count
        while low < high {
            let mid = (low + high) / 2
            if failures[mid].file.index < file.index { low = mid + 1 } else { high = mid }
        }
        guard low < Self.maxFailuresKept else { return }
        failures.insert((file, error), at: low)
        if failures.count > Self.maxFailuresKept { failures.removeLast() }
    }

    public var bytesPerSecond: Double {
        let seconds = elapsed.secondsDouble
        return seconds > 0 ? Double(bytes) / seconds : 0
    }

    /// The batch's exit code: 0 when every file is saved or was already complete; else the
    /// exit code of the failed file that comes first in the manifest.
    public var exitCode: Int32 { firstFailure?.error.kind.exitCode ?? 0 }
}
