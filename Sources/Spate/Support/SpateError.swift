/// Every failure Spate reports: a kind that maps to a documented exit code, and a one-line
/// message that is safe to print (secrets are redacted before a message is built).
public struct SpateError: Error, Sendable, CustomStringConvertible, Equatable {
    /// What went wrong, coarse enough to act on and to map to an exit code.
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        fileprivate enum Code: Hashable, Sendable {
            case usage, network, http, invalidResponse, checksumMismatch, localIO
            case remoteChanged, journal, cancelled, outputClosed
        }
        fileprivate let code: Code

        /// Bad arguments or options; nothing was sent.
        public static let usage = Kind(code: .usage)
        /// Connection, DNS, TLS, timeout or stall failures, after retries.
        public static let network = Kind(code: .network)
        /// The server answered with an HTTP error status.
        public static let http = Kind(code: .http)
        /// The server's reply broke HTTP range semantics (wrong status, Content-Range, length).
        public static let invalidResponse = Kind(code: .invalidResponse)
        /// The downloaded content does not match the expected digest.
        public static let checksumMismatch = Kind(code: .checksumMismatch)
        /// A local file-system failure: permissions, disk full, existing output.
        public static let localIO = Kind(code: .localIO)
        /// The remote file changed (validator or size) during the download.
        public static let remoteChanged = Kind(code: .remoteChanged)
        /// The resume journal is unusable or belongs to another download.
        public static let journal = Kind(code: .journal)
        /// The download was cancelled by its caller.
        public static let cancelled = Kind(code: .cancelled)
        /// The reader of an ordered stream (`-o -`, a FIFO) went away: the pipe broke.
        public static let outputClosed = Kind(code: .outputClosed)

        public var description: String {
            switch code {
            case .usage: "usage"
            case .network: "network"
            case .http: "http"
            case .invalidResponse: "invalid-response"
            case .checksumMismatch: "checksum-mismatch"
            case .localIO: "local-io"
            case .remoteChanged: "remote-changed"
            case .journal: "journal"
            case .cancelled: "cancelled"
            case .outputClosed: "output-closed"
            }
        }

        /// The process exit code the `spate` command uses for this kind (documented in README).
        public var exitCode: Int32 {
            switch code {
            case .usage: 2
            case .network: 3
            case .http: 4
            case .checksumMismatch: 5
            case .localIO: 6
            case .remoteChanged: 7
            case .invalidResponse: 8
            case .journal: 9
            case .cancelled: 130
            // 128 + SIGPIPE: what a shell shows for a writer stopped by a closed pipe (`yes | head`).
            case .outputClosed: 141
            }
        }
    }

    public let kind: Kind
    /// One line, no secrets.
    public let message: String
    /// The HTTP status, when the failure is an HTTP error.
    public let httpStatus: Int?

    public init(_ kind: Kind, _ message: String, httpStatus: Int? = nil) {
        self.kind = kind
        self.message = message
        self.httpStatus = httpStatus
    }

    public var description: String { message }
}

extension SpateError {
    static func usage(_ message: String) -> SpateError { SpateError(.usage, message) }
    static func localIO(_ message: String) -> SpateError { SpateError(.localIO, message) }
    static func invalidResponse(_ message: String) -> SpateError { SpateError(.invalidResponse, message) }
    /// The remote file is another version now; `detail` says what changed.
    static func remoteChanged(_ detail: String) -> SpateError {
        SpateError(.remoteChanged, "remote file changed during the download: \(detail)")
    }
}
