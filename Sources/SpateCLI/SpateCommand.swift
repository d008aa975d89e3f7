import ArgumentParser
import Spate

/// `spate URL [-o PATH] [-c N] ...`: the command-line downloader.
///
/// The form `spate URL -o PATH -c N` is a contract other tooling relies on: extend, never rename.
struct SpateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spate",
        abstract: "Download a large file fast over many HTTP connections, verified.",
        usage: """
            spate URL [-o PATH] [-c N] [--chunk-size SIZE] [--checksum ALG:HEX] [-H 'Name: value']... [-q] [--force]
            spate -i FILE [URL...] [-d DIR] [-c N] [--max-per-host N] [-j N] [--shard K/N] [--events PATH] [--fail-fast]
            spate URL URL... [-d DIR] [...]
            spate            (no URL: demo on a bundled loopback server with 1 GiB of generated data)
            """,
        discussion: """
            Examples:
              spate https://example.com/big.iso
              spate https://example.com/big.iso -o /data/big.iso --checksum sha256:<hex>
              spate https://example.com/backup.tar.zst -o - | zstd -d | tar x
              spate https://api.example.com/file -H 'Authorization: Bearer ...'

            The file is written to PATH.part and renamed to PATH only when it is complete
            and verified. An existing PATH is never replaced without --force. A resume
            journal, PATH.part.journal, records what is on disk: after an interruption,
            run the same command again to continue. Inspect it with:
              spate journal show PATH [--json]

            Benchmarks: spate bench sweeps settings into nothing and reports throughput,
            time to first byte and CPU per GiB (spate bench --help):
              spate bench URL [--connections 1,2,4,...] [--chunk-sizes auto,1M,...]
                              [--repeat N] [--json] [--chart FILE.svg]

            Many files (-i FILE, or several URLs): manifest lines are "URL [DEST]" (pget's
            format) or aria2's input-file format (a URL line, then indented out=, dir=,
            checksum=ALG=HEX and header= lines); # comments and blank lines are allowed.
            Every DEST stays inside -d DIR. -c is then the global connection maximum,
            --max-per-host caps each host across all files. Running the same command again
            skips complete files, resumes partial ones and fetches the rest. The batch
            exits with 0 when every file is saved or already complete, else with the exit
            code of the failed file that comes first in the list; 2 for a bad manifest
            line (before any download starts; with --shard, other shards' URLs are left to
            their shard).

            Exit codes:
              0    success
              2    usage error (bad arguments, URL, header, checksum syntax)
              3    network failure (connect, TLS, timeout, stall), after retries; or
                   --max-time reached (partial file and journal kept)
              4    HTTP error status from the server (e.g. 403, 404, 503 after retries)
              5    checksum mismatch
              6    local I/O error (unwritable directory, output exists, disk full,
                   another spate process writing the same output)
              7    the remote file changed during the download (see --restart-on-change)
              8    invalid server response (bad Content-Range, wrong length, malformed
                   or oversized header, a size beyond 1 EiB, ...)
              9    unusable resume journal (corrupt, or from another download)
              130  interrupted (SIGINT, SIGTERM, SIGHUP; partial file and journal kept)
              141  the reader of -o - (or of a FIFO) stopped reading (broken pipe)
            """)

    @Argument(help: "The http or https URL to download (several: a batch into --dir). Omit it to run the bundled demo.")
    var urls: [String] = []

    @Option(name: [.short, .customLong("input-file")], help: ArgumentHelp(
        "Download every file listed in FILE ('-': standard input): 'URL [DEST]' lines, or aria2's input-file format.",
        valueName: "FILE"))
    var inputFile: String?

    @Option(name: [.short, .customLong("dir")], help: ArgumentHelp(
        "Base directory of a batch: every destination stays inside it (default: the current directory).",
        valueName: "DIR"))
    var dir: String?

    @Option(parsing: .unconditional, help: ArgumentHelp(
        "Most connections to one host, probes included: across all files of a batch (default \(DownloadSession.Limits.defaultMaxConnectionsPerHost)), or to each source of one URL (default: -c).",
        valueName: "N"))
    var maxPerHost: Int?

    @Option(name: [.customShort("j"), .customLong("max-files")], parsing: .unconditional, help: ArgumentHelp(
        "Batch: most files in flight (default: 4 x -c, at least 256, at most 1024). Files in flight finish before later ones start. Small files already written and waiting for their flush do not count (up to 4096 more).",
        valueName: "N"))
    var maxFiles: Int?

    @Flag(help: "Batch: stop at the first failed file (default: every file is tried).")
    var failFast = false

    @Option(help: ArgumentHelp(
        "Batch: take only the entries whose destination hashes to K of N (0 <= K < N), to split a list across machines.",
        valueName: "K/N"))
    var shard: String?

    @Option(help: ArgumentHelp(
        "Write events as JSON lines (NDJSON) to PATH ('-': standard output); see docs/events.md.",
        valueName: "PATH"))
    var events: String?

    /// The single URL of a one-file download (nil for the demo and for batches).
    var url: String? { isBatch ? nil : urls.first }

    /// Several URLs, or a manifest: many files into --dir.
    var isBatch: Bool { inputFile != nil || urls.count > 1 }

    @Option(name: [.short, .customLong("output")], help: ArgumentHelp(
        "Output path (default: the URL's last path segment). A directory keeps the default name. '-': standard output, in order; a FIFO or character device is written the same way (never replaced); /dev/null discards.",
        valueName: "PATH"))
    var output: String?

    @Option(name: [.short, .customLong("connections")], parsing: .unconditional, help: ArgumentHelp(
        "Most simultaneous connections (1-\(DownloadOptions.maximumConnections)); spate starts with \(DownloadOptions().initialConnections) and adds more while they raise the throughput. In a batch: the global maximum (1-\(DownloadSession.Limits.highestMaxConnections)).", valueName: "N"))
    var connections: Int = DownloadOptions.defaultConnections

    @Option(help: ArgumentHelp("Bytes per range request, e.g. 4M, from 4K (default: automatic).", valueName: "SIZE"))
    var chunkSize: String?

    @Option(help: ArgumentHelp(
        "Reorder window of an ordered stream (-o -, a FIFO, a device): received bytes waiting for earlier ones plus requests in flight stay within it (default 64M; 1M-16G).",
        valueName: "SIZE"))
    var window: String?

    @Option(name: [.customLong("max-rate"), .customLong("limit-rate")], help: ArgumentHelp(
        "Most bytes per second across all connections (and, in a batch, all files), e.g. 40M: one budget shared by every transfer; a transfer held back by it never counts as stalled. (--limit-rate: curl's name.)",
        valueName: "SIZE"))
    var maxRate: String?

    @Option(help: ArgumentHelp(
        "Write a Chrome trace-event JSON of the run to FILE (open it in Perfetto or chrome://tracing): a lane per connection, a span per request, instants for retries, steals, hedges, tuner steps, journal commits and URL re-resolutions.",
        valueName: "FILE"))
    var trace: String?

    @Flag(help: "Throw the bytes away as they arrive (like -o /dev/null): for benchmarks. With --checksum they are still hashed, in order.")
    var discard = false

    @Option(help: ArgumentHelp("Expected digest: sha256, sha512, sha1, md5, crc32c, crc64nvme or crc32, e.g. sha256:<hex>.", valueName: "ALG:HEX"))
    var checksum: String?

    @Flag(help: "Do not verify the whole-file digest the server publishes (Repr-Digest, x-amz-checksum-*, x-goog-hash, X-Linked-Etag, Content-MD5 on whole replies).")
    var noServerDigest = false

    @Option(name: [.customShort("H"), .customLong("header")], help: ArgumentHelp(
        "Extra request header (repeatable). Sent only to the URL's own host unless --location-trusted.",
        valueName: "Name: value"))
    var headers: [String] = []

    @Option(help: ArgumentHelp(
        "Another URL of the same file (repeatable): ranges go to every source by its speed. It must serve the same size and version (same ETag or Last-Modified; with a --checksum hash, any). -H headers go only to the URL's own scheme, host and port.",
        valueName: "URL"))
    var mirror: [String] = []

    @Flag(name: .shortAndLong, help: "No progress line; print only a one-line summary or errors.")
    var quiet = false

    @Flag(name: [.customShort("V"), .long], help: "Print spate's version and the versions of the libraries it runs with (libcurl, OpenSSL, liblz4, ISA-L), then exit.")
    var version = false

    @Flag(help: "Replace an existing output file (never a partial file another spate process is writing).")
    var force = false

    @Option(parsing: .unconditional, help: ArgumentHelp("Retries of a failing request before giving up.", valueName: "N"))
    var maxRetries: Int = RetryPolicy().maxRetries

    @Option(parsing: .unconditional, help: ArgumentHelp("Longest wait between retries, in seconds (also caps Retry-After).", valueName: "SECONDS"))
    var retryMaxWait: Double = RetryPolicy().maxDelay.secondsDouble

    @Flag(help: "Use HTTP/2 over TLS when the server offers it: ranges multiplexed, 8 per connection (default: HTTP/1.1, measured faster).")
    var http2 = false

    @Flag(help: "Send -H headers to redirect targets on other hosts too.")
    var locationTrusted = false

    @Flag(help: "If the remote file changes mid-download, start over (default: stop with exit code 7).")
    var restartOnChange = false

    @Option(parsing: .unconditional, help: ArgumentHelp("Stall watchdog: a request slower than --min-speed for this long is retried on a fresh connection.", valueName: "SECONDS"))
    var stallTimeout: Double = DownloadOptions().lowSpeedWindow.secondsDouble

    @Option(parsing: .unconditional, help: ArgumentHelp("Longest wait for a connection (TCP and TLS handshakes); a connection not made by then is a failed attempt, retried (as curl's --connect-timeout).", valueName: "SECONDS"))
    var connectTimeout: Double = DownloadOptions().connectTimeout.secondsDouble

    @Option(help: ArgumentHelp("Stall watchdog threshold in bytes per second, e.g. 1K. A stalled attempt counts as a failure however many bytes it moved. 0: only a request that receives nothing for --stall-timeout is cut.", valueName: "SIZE"))
    var minSpeed: String = "1K"

    @Flag(help: "Do not keep a resume journal (a failed download then leaves nothing behind).")
    var noJournal = false

    @Flag(help: "On resume, trust the journal instead of re-hashing the recorded ranges on disk (faster; bytes changed on disk after the journal recorded them then go unnoticed unless --checksum is given).")
    var fastResume = false

    @Flag(help: "Use exactly -c connections instead of letting spate find how many help.")
    var noTuning = false

    @Flag(help: "Do not split in-flight ranges for idle connections.")
    var noStealing = false

    @Flag(help: "Do not duplicate the slowest range at the end of the download.")
    var noHedging = false

    @Option(help: ArgumentHelp("PEM file of CA certificates to trust (instead of the system's).", valueName: "PATH"))
    var cacert: String?

    @Flag(name: [.customShort("k"), .long], help: "Do not verify TLS certificates (dangerous).")
    var insecure = false

    @Flag(name: [.customShort("4"), .customLong("ipv4")], help: "Connect to IPv4 addresses only (as curl -4).")
    var ipv4 = false

    @Flag(name: [.customShort("6"), .customLong("ipv6")], help: "Connect to IPv6 addresses only (as curl -6).")
    var ipv6 = false

    @Option(name: [.customShort("x"), .long], help: ArgumentHelp(
        "Send every request through this proxy (http://, https://, socks5h://...; \"\" for none). Default: the http_proxy, HTTPS_PROXY, ALL_PROXY and NO_PROXY variables. Credentials only in those variables.",
        valueName: "URL"))
    var proxy: String?

    @Option(name: .customLong("noproxy"), help: ArgumentHelp(
        "Hosts reached without the proxy: names, domains, addresses, comma-separated; * for all (as curl).", valueName: "LIST"))
    var noProxy: String?

    @Option(name: [.customShort("m"), .customLong("max-time")], help: ArgumentHelp(
        "Stop the whole run after SECONDS (retries, waits and every file of a batch included), as curl -m: exit 3, the partial file and journal kept for a resume. 0: no limit.",
        valueName: "SECONDS"))
    var maxTime: Double?

    @Option(name: .customLong("resolve"), help: ArgumentHelp(
        "Connect to ADDRESS for HOST on PORT instead of what DNS gives (repeatable; IPv6 in brackets, as curl): the URL, Host header and TLS name stay HOST.",
        valueName: "HOST:PORT:ADDRESS"))
    var resolve: [String] = []

    @Option(name: [.customShort("A"), .customLong("user-agent")], help: ArgumentHelp(
        "The User-Agent header to send (default: spate/VERSION).", valueName: "STRING"))
    var userAgent: String?

    @Option(help: ArgumentHelp("Size of the generated file for the demo (no URL).", valueName: "SIZE"))
    var demoSize: String = "1G"

    @Flag(name: .shortAndLong, help: "Trace connections and headers on stderr (secrets redacted).")
    var verbose = false

    @Option(help: ArgumentHelp("Send 'Authorization: Bearer' with the token in this environment variable.", valueName: "VAR"))
    var bearerTokenEnv: String?

    @Option(help: ArgumentHelp("Send 'Authorization: Bearer' with the token in this file.", valueName: "PATH"))
    var bearerTokenFile: String?

    @Option(help: ArgumentHelp("Read extra headers, one 'Name: value' per line, from this file (keeps secrets out of argv).", valueName: "PATH"))
    var headerFile: String?

    @Flag(name: [.customShort("n"), .long], help: "Log in with the user name and password ~/.netrc gives for the host (as curl -n).")
    var netrc = false

    @Option(help: ArgumentHelp("As --netrc, from this file.", valueName: "PATH"))
    var netrcFile: String?

    @Option(help: ArgumentHelp("Download only these bytes: START-END (inclusive) or START-, e.g. 0-1048575.", valueName: "START-END"))
    var range: String?

    @Flag(name: [.customShort("J"), .customLong("remote-header-name")],
          help: "Name the output as the server's Content-Disposition says (sanitized; never replaces a file). -o may name the directory.")
    var remoteHeaderName = false

    @Option(help: .hidden)
    var bufferSize: String?

    @Option(help: .hidden)
    var journalCommitMs: Int?

    @Option(help: .hidden)
    var stagingSize: String?

    /// `-o -`, a FIFO, a device, `/dev/null` or `--discard`: where the bytes go instead of a
    /// file (nil for a file). Opens a FIFO or device (a FIFO waits for its reader).
    func outputTarget(checksum: Bool) throws(SpateError) -> OutputTarget? {
        var windowBytes = DownloadOutput.defaultWindow
        if let window {
            guard let bytes = ByteSize.parse(window),
                  (DownloadOutput.minimumWindow...DownloadOutput.maximumWindow).contains(bytes) else {
                throw SpateError(.usage, "invalid --window \"\(window)\": use a size from 1M to 16G, like 64M")
            }
            windowBytes = bytes
        }
        let target = try OutputTarget.resolve(output: output, discard: discard, window: windowBytes, checksum: checksum)
        if window != nil, target == nil || target?.output == .discard {
            throw SpateError(.usage, "--window is for an ordered stream (-o -, a FIFO or a device)")
        }
        if events == "-", let target, case .stream(let fd, _) = target.output, fd == 1 {
            throw SpateError(.usage, "-o - and --events - would both write to standard output; give --events a file")
        }
        return target
    }

    /// Batch options without a batch are mistakes worth saying so.
    func checkModeOptions() throws(SpateError) {
        if isBatch && (discard || window != nil) {
            throw SpateError(.usage, "\(discard ? "--discard" : "--window") is for one URL")
        }
        if isBatch && !mirror.isEmpty {
            throw SpateError(.usage, "--mirror is for one URL; in a manifest, put a file's mirrors on its line, TAB-separated")
        }
        guard !isBatch else { return }
        let batchOnly: [(Bool, String)] = [
            (dir != nil, "-d"), (maxFiles != nil, "-j"), (failFast, "--fail-fast"), (shard != nil, "--shard"),
        ]
        if let (_, name) = batchOnly.first(where: { $0.0 }) {
            throw SpateError(.usage, "\(name) is for batches: give -i FILE or several URLs (for one file, use -o PATH)")
        }
    }

    /// Builds the library's options, rejecting bad input before any network traffic.
    func downloadOptions() throws(SpateError) -> DownloadOptions {
        var options = DownloadOptions()
        options.connections = isBatch ? min(connections, DownloadOptions.maximumConnections) : connections
        if let chunkSize {
            guard let bytes = ByteSize.parse(chunkSize), bytes >= DownloadOptions.minimumChunkBytes else {
                throw SpateError(.usage, "invalid --chunk-size \"\(chunkSize)\": use a size from 4 KiB to 1 EiB, like 4M or 1048576")
            }
            options.chunkBytes = bytes
        }
        if let checksum { options.checksum = try Checksum(parsing: checksum) }
        options.headers = try headers.map { line throws(SpateError) in try HTTPHeader(parsing: line) }
        options.mirrors = try mirror.map { text throws(SpateError) in
            do throws(SpateError) { return try RemoteURL(text) } catch { throw SpateError(.usage, "invalid --mirror: \(error.message)") }
        }
        options.overwrite = force
        guard maxRetries >= 0, maxRetries <= 1000 else {
            throw SpateError(.usage, "--max-retries must be between 0 and 1000")
        }
        options.retry.maxRetries = maxRetries
        guard retryMaxWait >= 0, retryMaxWait <= 86_400 else {
            throw SpateError(.usage, "--retry-max-wait must be between 0 and 86400 seconds")
        }
        options.retry.maxDelay = .milliseconds(Int64(retryMaxWait * 1000))
        options.locationTrusted = locationTrusted
        if let maxPerHost {
            guard maxPerHost >= 1 else { throw SpateError(.usage, "the per-host connection maximum must be at least 1, not \(maxPerHost)") }
            options.maxConnectionsPerHost = maxPerHost
        }
        options.http2 = http2
        options.restartOnChange = restartOnChange
        guard stallTimeout >= 1, stallTimeout <= 3600 else {
            throw SpateError(.usage, "--stall-timeout must be between 1 and 3600 seconds")
        }
        options.lowSpeedWindow = .milliseconds(Int64(stallTimeout * 1000))
        guard connectTimeout >= 0.1, connectTimeout <= 600 else {
            throw SpateError(.usage, "--connect-timeout must be between 0.1 and 600 seconds")
        }
        options.connectTimeout = .milliseconds(Int64(connectTimeout * 1000))
        guard let speed = ByteSize.parse(minSpeed), let speedValue = Int(exactly: speed) else {
            throw SpateError(.usage, "invalid --min-speed \"\(minSpeed)\": use a size like 1K")
        }
        options.lowSpeedBytesPerSecond = speedValue
        if let maxRate {
            guard let rate = ByteSize.parse(maxRate), rate >= 1024 else {
                throw SpateError(.usage, "invalid --max-rate \"\(maxRate)\": use bytes per second from 1K, like 40M")
            }
            options.maxBytesPerSecond = rate
        }
        options.journal = !noJournal
        options.serverDigests = !noServerDigest
        if let stagingSize {
            guard let bytes = ByteSize.parse(stagingSize), bytes >= 16 * 1024, bytes <= 8 << 20 else {
                throw SpateError(.usage, "invalid --staging-size \"\(stagingSize)\"")
            }
            options.stagingBufferBytes = Int(bytes)
        }
        if let journalCommitMs {
            guard (10...60_000).contains(journalCommitMs) else {
                throw SpateError(.usage, "--journal-commit-ms must be between 10 and 60000")
            }
            options.journalCommitInterval = .milliseconds(journalCommitMs)
        }
        options.verifyResume = !fastResume
        options.selfTuning = !noTuning
        options.workStealing = !noStealing
        options.tailHedging = !noHedging
        if let cacert {
            guard FilePaths.exists(cacert) else { throw SpateError(.usage, "--cacert \(cacert): no such file") }
            // A key or any other file given by mistake: say so before anything is sent.
            guard let text = try? SecretInputs.readFile(cacert, what: "--cacert", maxBytes: 16 << 20),
                  text.contains("-----BEGIN CERTIFICATE-----") else {
                throw SpateError(.usage, "--cacert \(cacert) holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
            }
            options.caCertificatePath = cacert
        }
        options.insecure = insecure
        if ipv4 && ipv6 { throw SpateError(.usage, "-4 and -6 exclude each other") }
        options.addressFamily = ipv4 ? .ipv4 : ipv6 ? .ipv6 : .any
        if let proxy { options.proxy = try ProxyArguments.proxy(proxy) }
        if let noProxy { options.noProxy = try ProxyArguments.noProxy(noProxy) }
        options.resolve = try resolve.map { text throws(SpateError) in try ResolveOverride(parsing: text) }
        options.userAgent = userAgent
        options.verbose = verbose
        options.headers += try SecretInputs.headers(bearerTokenEnv: bearerTokenEnv, bearerTokenFile: bearerTokenFile,
                                                    headerFile: headerFile)
        options.netrcFile = try SecretInputs.netrcFile(netrc: netrc, path: netrcFile)
        if options.headers.filter({ $0.name.lowercased() == "authorization" }).count > 1 {
            throw SpateError(.usage, "more than one Authorization header (from -H, --header-file or --bearer-token-*)")
        }
        if let range { options.byteRange = try PartialByteRange(parsing: range) }
        options.nameFromServer = remoteHeaderName
        if let bufferSize {
            guard let bytes = ByteSize.parse(bufferSize), let value = Int(exactly: bytes) else {
                throw SpateError(.usage, "invalid --buffer-size \"\(bufferSize)\"")
            }
            options.receiveBufferBytes = value
        }
        try options.validate()
        return options
    }
}
