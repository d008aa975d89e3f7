/// How to download: connections, request size, verification, headers, retries, TLS.
public struct DownloadOptions: Sendable {
    /// The most connections this download opens at once (`-c`), 1 ... `maximumConnections`.
    /// In a shared `DownloadSession` its budgets may allow fewer; without one the download's
    /// own session allows exactly this many, to any host.
    public var connections: Int = DownloadOptions.defaultConnections
    /// Let the connection count follow the throughput (`ConnectionTuner`), from
    /// `initialConnections` up to `connections`. Off: always `connections`.
    public var selfTuning = true
    /// Where self-tuning starts: a quarter of the default maximum, because every step up costs
    /// a sampling window at the lower rate (on a 1 GiB download at 25 MB/s per connection, a
    /// start at 8 measured slower than a start at 16).
    public var initialConnections = 16
    /// A file of at most this many bytes is fetched whole by the probe — one request, no range
    /// requests, no journal — and made durable together with other small files (`syncfs` for
    /// all that finished meanwhile). 0: the probe asks for one byte. Batches use
    /// `wholeFileDefault`; ignored with `byteRange`.
    public var wholeFileBytes = 0
    /// Set by a batch, which has created the directory and judged what is at the destination
    /// (`BatchSkipCheck`): the engine then skips its own check of the destination. Nil outside
    /// a batch, where an existing partial file is refused.
    var batchFound: BatchFound?
    /// What a batch found at a destination it fetches.
    enum BatchFound: Sendable {
        /// Nothing at all, not even a partial file: a small file arriving whole is written with
        /// no name until it is durable (`OutputFile(unnamedFor:)`), as no leftover needs
        /// replacing.
        case nothing
        /// No journal: a partial file there is a leftover (a small file's, or one killed before
        /// its journal's first byte) and is replaced when it is spate's and unlocked
        /// (`OutputFile.Replace.leftover`), not refused.
        case noJournal
        /// A journal: the download resumes what it records.
        case journal
    }
    var destinationPrepared: Bool { batchFound != nil }
    var replacesUnjournaledPartial: Bool { batchFound == .nothing || batchFound == .noJournal }
    var noPartialFile: Bool { batchFound == .nothing }
    /// What creating a new partial file does with one already there.
    var partialFileReplace: OutputFile.Replace { overwrite ? .always : replacesUnjournaledPartial ? .leftover : .never }
    /// The most bytes per second across all connections (`--max-rate`), for a download that
    /// runs in a session of its own; in a shared session, `DownloadSession.Limits` rules.
    public var maxBytesPerSecond: Int64?
    /// Records requests and scheduling events for `--trace`, for a download that runs in a
    /// session of its own (a shared session has its own `trace`).
    public var trace: TraceRecorder?
    /// Where the bytes go: a file (the destination path, through `PATH.part`), an ordered
    /// stream, or nowhere.
    public var output: DownloadOutput = .file
    /// The batches' `wholeFileBytes`: about one request's worth.
    public static let wholeFileDefault = 1 << 20
    /// Bytes per range request; nil lets Spate choose (see `RequestSizer`).
    public var chunkBytes: Int64?
    /// The expected whole-file digest; a mismatch fails the download and leaves no file.
    public var checksum: Checksum?
    /// Verify the whole-file digest the server publishes (`Repr-Digest`, S3, GCS, Hugging Face;
    /// `ServerDigests`) when there is no `checksum` (`--no-server-digest` turns it off).
    public var serverDigests = true
    /// Extra request headers. They go only to the original URL's scheme, host and port,
    /// unless `locationTrusted` is set.
    public var headers: [HTTPHeader] = []
    /// Other sources of the same file (`--mirror`, or TAB-separated URLs on a manifest line):
    /// ranges go to every source that describes the same file as the URL (see `SourceSet`).
    /// The user's headers go only to the URL's own origin.
    public var mirrors: [RemoteURL] = []
    /// The most connections to one host (each source's) when the download makes its own
    /// session; nil: `connections` (`--max-per-host` for one URL). A shared session has its
    /// own limits.
    public var maxConnectionsPerHost: Int?
    /// Ask for HTTP/2 over TLS (ALPN; plain http stays HTTP/1.1): the requests to one host are
    /// multiplexed on a few connections, `CurlLoop.streamsPerConnection` streams each
    /// (`--http2`). Off by default: HTTP/1.1 measured faster (docs/performance.md).
    public var http2 = false
    /// Send `headers` to redirect targets on other hosts too (`--location-trusted`).
    public var locationTrusted = false
    /// Replace an existing output file (and a stale partial file).
    public var overwrite = false
    /// Name the output from the server's `Content-Disposition` (RFC 6266, `filename*` first),
    /// sanitized; the destination given to `Download` is then a directory. Falls back to the
    /// URL's last path segment. A server-named file never replaces an existing one.
    public var nameFromServer = false
    /// Download only these bytes of the remote file (`--range START-END`), still split across
    /// connections. The output holds exactly them.
    public var byteRange: PartialByteRange?
    /// When the remote file changes mid-download, start over instead of failing
    /// (`--restart-on-change`; at most `maximumRestarts` times).
    public var restartOnChange = false
    public static let maximumRestarts = 3
    /// Keep a resume journal beside the partial file (`--no-journal` turns it off).
    public var journal = true
    /// How often the journal commits (fdatasync of the data, then one appended frame). A crash
    /// loses at most about this much progress.
    public var journalCommitInterval: Duration = .seconds(1)
    /// On resume, re-hash the recorded ranges on disk and fetch again those that fail
    /// (`--fast-resume` skips this).
    public var verifyResume = true
    /// Idle connections split the largest in-flight remainder when nothing is pending.
    public var workStealing = true
    /// At the end, the slowest request's tail is also fetched on a fresh connection.
    public var tailHedging = true
    public var retry = RetryPolicy()
    /// The stall watchdog: a request slower than this over `lowSpeedWindow` is abandoned and its
    /// remaining bytes are fetched again on a fresh connection; the attempt counts against the
    /// retry budget however many bytes it moved (a trickle is not progress). 0 keeps only the
    /// bound every wait needs: a request that receives nothing at all for `lowSpeedWindow`.
    public var lowSpeedBytesPerSecond = 1024
    public var lowSpeedWindow: Duration = .seconds(10)
    public var connectTimeout: Duration = .seconds(15)
    /// A PEM bundle of CA certificates to trust instead of the system's.
    public var caCertificatePath: String?
    /// Skip TLS certificate verification. Dangerous; only when asked.
    public var insecure = false
    /// Which addresses a host name resolves to (`-4`, `-6`): for a broken IPv6 route, or a
    /// host that must be reached over one family. Default: both (libcurl's Happy Eyeballs).
    public var addressFamily: AddressFamily = .any
    /// The proxy every request goes through (`-x`, as curl's: `http://`, `https://`,
    /// `socks5h://`, …), "" for none; nil: libcurl's environment variables (`http_proxy`,
    /// `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`).
    public var proxy: String?
    /// Hosts reached without the proxy (`--noproxy`, libcurl's `NO_PROXY` syntax: a comma
    /// list of names, domains and addresses, `*` for all); nil: the environment's.
    public var noProxy: String?
    /// A `.netrc` file: each request logs in with the login and password it gives for the
    /// request's own host (libcurl's `CURLOPT_NETRC`, optional: credentials in the URL win, and
    /// so does an `Authorization` header given with `-H`). Nil: no netrc.
    public var netrcFile: String?
    /// Addresses to connect to for some hosts instead of DNS's (`--resolve`, as curl's).
    /// libcurl keeps them in the session's DNS cache, shared by its downloads: within one
    /// `DownloadSession` an entry applies to every download of that host and port from the
    /// first request that carries it, and a later entry for the same host and port replaces
    /// it for all. Give every download of a session the same entries (the CLI does).
    public var resolve: [ResolveOverride] = []
    /// The `User-Agent` header (`-A`); nil: `spate/VERSION`. A `User-Agent` given with `-H`
    /// wins (libcurl sends the custom header instead).
    public var userAgent: String?
    /// How often `.progress` events are emitted.
    public var progressInterval: Duration = .milliseconds(250)
    /// libcurl's receive buffer per connection; nil lets the session choose (a 2 MiB budget
    /// shared by its connections: `DownloadSession.receiveBufferBytes`).
    public var receiveBufferBytes: Int?
    /// Bytes gathered per `pwrite` at most (the writer thread's staging buffers; used by the
    /// download's own session, when it has one).
    public var stagingBufferBytes = 64 * 1024
    /// libcurl's trace of connections and headers on stderr, secrets redacted (`--verbose`).
    public var verbose = false
    /// The seed of the download's randomness (retry jitter); nil draws one. Tests and soaks set
    /// it so a run can be replayed.
    public var randomSeed: UInt64?

    /// The default maximum (and per-host cap): self-tuning decides how many are used, and grows
    /// past 16 only while each step raises the throughput by 15 % (per-connection limits).
    public static let defaultConnections = 64

    public static let maximumConnections = 128

    /// The smallest fixed request size. Each request costs a header exchange and, without
    /// keep-alive luck, a round trip: below a page, a file of a few MiB takes minutes in
    /// requests (a 1 MiB file at 1-byte requests ran past 60 s).
    public static let minimumChunkBytes: Int64 = 4 * 1024

    public init() {}

    /// Checks ranges of values; the CLI calls this before any network traffic.
    public func validate() throws(SpateError) {
        guard (1...DownloadOptions.maximumConnections).contains(connections) else {
            throw .usage("connections must be between 1 and \(DownloadOptions.maximumConnections), not \(connections)")
        }
        if let chunkBytes, chunkBytes < Self.minimumChunkBytes || chunkBytes > ByteSize.largest {
            throw .usage("the chunk size must be between 4 KiB and 1 EiB")
        }
        if lowSpeedBytesPerSecond < 0 || Int64(lowSpeedBytesPerSecond) > ByteSize.largest {
            throw .usage("the stall watchdog's speed must be between 0 and 1 EiB/s")
        }
        if retry.maxRetries < 0 { throw .usage("max retries cannot be negative") }
        if retry.maxDelay < .zero { throw .usage("retry max wait cannot be negative") }
        if let receiveBufferBytes, receiveBufferBytes < 16 * 1024 || receiveBufferBytes > 10 * 1024 * 1024 {
            throw .usage("receive buffer must be between 16 KiB and 10 MiB")
        }
        switch output {
        case .file:
            break
        case .stream(let fd, let window):
            guard fd >= 0 else { throw .usage("the stream's descriptor is not valid") }
            guard (DownloadOutput.minimumWindow...DownloadOutput.maximumWindow).contains(window) else {
                throw .usage("the reorder window must be between 1 MiB and 16 GiB")
            }
        case .discard:
            if checksum != nil {
                throw .usage("a checksum needs the bytes in order: stream to /dev/null instead of discarding")
            }
        }
        if let userAgent {
            guard userAgent.utf8.count <= 1024, !userAgent.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }) else {
                throw .usage("the user agent must be at most 1024 bytes without control characters (CR, LF, NUL, ...)")
            }
        }
        guard (0...(64 << 20)).contains(wholeFileBytes) else {
            throw .usage("the whole-file probe size must be between 0 and 64 MiB")
        }
    }
}

/// `START-END` (inclusive, as in HTTP) or `START-` (to the end of the file).
public struct PartialByteRange: Sendable, Hashable, CustomStringConvertible {
    public let start: Int64
    /// The last byte, inclusive; nil for "to the end".
    public let last: Int64?

    public init(start: Int64, last: Int64?) throws(SpateError) {
        guard start >= 0, last.map({ $0 >= start }) ?? true else {
            throw .usage("invalid range \(start)-\(last.map(String.init) ?? ""): the end must not be before the start")
        }
        self.start = start
        self.last = last
    }

    /// Parses `START-END` or `START-` (sizes like 1M allowed).
    public init(parsing text: String) throws(SpateError) {
        let parts = text.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, let start = ByteSize.parse(String(parts[0])) else {
            throw .usage("invalid --range \"\(text)\": use START-END or START- (byte offsets up to 1 EiB, END inclusive)")
        }
        var last: Int64?
        if !parts[1].isEmpty {
            guard let end = ByteSize.parse(String(parts[1])) else {
                throw .usage("invalid --range \"\(text)\": use START-END or START- (byte offsets up to 1 EiB, END inclusive)")
            }
            last = end
        }
        try self.init(start: start, last: last)
    }

    /// The remote bytes this selects in a file of `size` bytes.
    public func clamped(toSize size: Int64) throws(SpateError) -> ByteRange {
        guard start < size else {
            throw .usage("--range starts at byte \(start), but the file has only \(size) bytes")
        }
        return ByteRange(start, min(size, (last ?? (size - 1)) + 1))
    }

    public var description: String { "\(start)-\(last.map(String.init) ?? "")" }
}

/// Where a download's bytes go.
public enum DownloadOutput: Sendable, Hashable {
    /// A file at the destination path: written in place through `PATH.part`, journaled,
    /// verified, renamed.
    case file
    /// An ordered stream to a descriptor the caller opened and closes (standard output, a
    /// FIFO, a character device): every byte written once, in order, with many connections;
    /// ranges finish out of order into a reorder window of `window` bytes (`StreamOutput`),
    /// and no request starts beyond it. No journal (a stream cannot be resumed); a checksum is
    /// verified in order. The destination path only names it in messages.
    case stream(fileDescriptor: Int32, window: Int64)
    /// Nothing is kept (`-o /dev/null`, `--discard`): the benchmark path. Not with a checksum.
    case discard

    /// The default reorder window: 64 MiB.
    public static let defaultWindow: Int64 = 64 << 20
    public static let minimumWindow: Int64 = 1 << 20
    public static let maximumWindow: Int64 = 16 << 30

    /// Whether the output is a file on disk.
    public var isFile: Bool { self == .file }
}

/// The IP addresses a download connects to (`DownloadOptions.addressFamily`).
public enum AddressFamily: Sendable, Equatable {
    case any, ipv4, ipv6
}
