import Glibc
import Synchronization

/// One download from probe to final rename: probe → plan → fetch (a task group of range
/// workers) → verify → finish. Everything it starts ends inside `run()`.
final class DownloadEngine: Sendable {
    let url: RemoteURL
    let destination: String
    let options: DownloadOptions
    let emit: @Sendable (DownloadEvent) -> Void
    let loop: CurlLoop
    let counters = DownloadCounters()
    private let stats = Mutex(Stats())

    /// The remote size once the probe knows it (for progress reports).
    var knownSize: Int64? { stats.withLock { $0.knownSize } }

    private struct Stats {
        var knownSize: Int64?
        var requests = 0
        var retries = 0
        var random = SplitMix64(seed: UInt64(truncatingIfNeeded: ContinuousClock.now.hashValue))
    }

    init(url: RemoteURL, destination: String, options: DownloadOptions,
         emit: @escaping @Sendable (DownloadEvent) -> Void) {
        self.url = url
        self.destination = destination
        self.options = options
        self.emit = emit
        self.loop = CurlLoop(maxConnectionsPerHost: options.connections + 1)
    }

    // MARK: - The whole download

    func run() async throws -> DownloadResult {
        defer { loop.shutdown() }
        let started = ContinuousClock.now
        try checkDestination()

        let remote = try await probe()
        let size = remote.size
        stats.withLock { $0.knownSize = size }
        let segmented = remote.acceptsRanges && (size ?? 0) > 0
        let sizer = RequestSizer(fileSize: size ?? 0, connections: options.connections, fixedBytes: options.chunkBytes)
        let connections = segmented ? sizer.usefulConnections(fileSize: size!) : 1
        emit(.started(DownloadPlan(
            url: remote.url.redacted, totalBytes: size, acceptsRanges: remote.acceptsRanges,
            connections: connections, requestBytes: segmented ? sizer.baseBytes : nil)))
        if !remote.acceptsRanges && (size ?? 1) > 0 {
            emit(.notice("the server does not support byte ranges: downloading with one connection"))
        }

        let file = try OutputFile(creatingFor: destination, replacePartial: options.overwrite)
        var finished = false
        defer { if !finished { file.discard() } }
        let writer = FileWriter(file: file, buffers: connections + 8)
        defer { writer.stop() }  // runs before the discard above: no write lands after it
        let hasher = options.checksum.map { WatermarkHasher(fd: file.fd, path: file.partPath, algorithm: $0.algorithm) }
        defer { hasher?.stop() }

        let totalBytes: Int64
        if segmented {
            try file.preallocate(size!)
            try await fetchSegmented(remote: remote, size: size!, sizer: sizer, workers: connections,
                                     writer: writer, hasher: hasher)
            totalBytes = size!
        } else if size == 0 {
            totalBytes = 0
        } else {
            if let size { try file.preallocate(size) }
            totalBytes = try await fetchStream(remote: remote, writer: writer)
            hasher?.advance(to: totalBytes)
        }
        writer.stop()
        if !segmented && size != 0 { try file.truncate(to: totalBytes) }
        if let hasher { try await verify(hasher, size: totalBytes) }

        try file.finish(mode: FileMode.newFileMode, replaceExisting: options.overwrite)
        finished = true
        let s = stats.withLock { $0 }
        let result = DownloadResult(
            path: destination, bytes: totalBytes, elapsed: ContinuousClock.now - started,
            verifiedChecksum: options.checksum, connections: connections, requests: s.requests, retries: s.retries)
        return result
    }

    private func verify(_ hasher: WatermarkHasher, size: Int64) async throws {
        guard let expected = options.checksum else { return }
        emit(.verifying)
        let actual = try await hasher.finish(size: size)
        guard actual == expected.digest else {
            throw SpateError(.checksumMismatch,
                             "checksum mismatch: expected \(expected.algorithm.rawValue):\(expected.hex), got \(expected.algorithm.rawValue):\(Hex.encode(actual))")
        }
    }

    /// Fails early, before any traffic, when the result could not be saved.
    private func checkDestination() throws {
        guard FilePaths.directoryIsWritable(for: destination) else {
            throw SpateError.localIO("cannot write to directory \(FilePaths.directory(of: destination))")
        }
        if FilePaths.exists(destination) && !options.overwrite {
            throw SpateError.localIO("\(destination) already exists; use --force to replace it")
        }
    }

    // MARK: - Requests

    /// The user's headers, when they may go to `target` (same scheme, host and port as the
    /// original URL, or `--location-trusted`). Credentials never cross origins otherwise
    /// (CVE-2018-1000007, CVE-2022-27774, CVE-2022-27776).
    func userHeaders(for target: RemoteURL) -> [String] {
        guard target.origin == url.origin || options.locationTrusted else { return [] }
        return options.headers.map(\.line)
    }

    var tuning: TransferTuning {
        TransferTuning(
            bufferBytes: options.effectiveReceiveBufferBytes, connectTimeout: options.connectTimeout,
            lowSpeedBytesPerSecond: options.lowSpeedBytesPerSecond, lowSpeedWindow: options.lowSpeedWindow,
            caCertificatePath: options.caCertificatePath, insecure: options.insecure, verbose: options.curlVerbose)
    }

    private func rangeSpec(_ range: ByteRange, remote: RemoteFile) -> TransferSpec {
        var headers = userHeaders(for: remote.url)
        headers.append("Range: \(range.httpRangeValue)")
        headers.append("Accept-Encoding: identity")
        if let validator = remote.ifRangeValidator { headers.append("If-Range: \(validator)") }
        return TransferSpec(url: remote.url.string, headers: headers, tuning: tuning)
    }

    private func streamSpec(remote: RemoteFile) -> TransferSpec {
        var headers = userHeaders(for: remote.url)
        headers.append("Accept-Encoding: identity")
        return TransferSpec(url: remote.url.string, headers: headers, tuning: tuning)
    }

    private func perform(_ spec: TransferSpec, sink: any ResponseSink) async throws -> TransferOutcome {
        stats.withLock { $0.requests += 1 }
        counters.activeTransfers.add(1, ordering: .relaxed)
        defer { counters.activeTransfers.subtract(1, ordering: .relaxed) }
        return try await loop.perform(spec, sink: sink)
    }

    /// Waits before a retry, or throws the verdict's error when retrying cannot help or the
    /// budget is spent.
    private func backOff(_ verdict: FailureVerdict, failures: Int) async throws {
        guard verdict.retryable, failures <= options.retry.maxRetries else {
            if verdict.retryable && options.retry.maxRetries > 0 {
                throw SpateError(verdict.error.kind, "\(verdict.error.message) (gave up after \(options.retry.maxRetries) retries)",
                                 httpStatus: verdict.error.httpStatus)
            }
            throw verdict.error
        }
        let random = stats.withLock { s -> Double in
            s.retries += 1
            return s.random.nextUnitInterval()
        }
        let delay = options.retry.delay(attempt: failures, retryAfter: verdict.retryAfter, random: random)
        emit(.retrying(reason: verdict.error.message, attempt: failures, delay: delay))
        try await Task.sleep(for: delay)
    }

    // MARK: - Probe

    static let maxRedirects = 10

    /// One GET with `Range: bytes=0-0` (not HEAD: presigned GET URLs often reject HEAD), through
    /// the same loop, following redirects by hand so credentials can be kept to their origin.
    func probe() async throws -> RemoteFile {
        var target = url
        var redirects = 0
        var failures = 0
        while true {
            try Task.checkCancellation()
            var headers = userHeaders(for: target)
            headers.append("Range: bytes=0-0")
            headers.append("Accept-Encoding: identity")
            let sink = ProbeSink()
            let outcome = try await perform(TransferSpec(url: target.string, headers: headers, tuning: tuning), sink: sink)

            guard let head = outcome.head else {
                failures += 1
                try await backOff(FailureClassifier.transportFailure(outcome, url: target), failures: failures)
                continue
            }
            switch head.status {
            case 301, 302, 303, 307, 308:
                guard let location = head["location"] else {
                    throw SpateError.invalidResponse("redirect \(head.status) without a Location header from \(target.redacted)")
                }
                redirects += 1
                if redirects > Self.maxRedirects {
                    throw SpateError.invalidResponse("too many redirects (more than \(Self.maxRedirects)), last to \(Redactor.url(location))")
                }
                let next = try target.resolving(location)
                target = next
                continue
            case 206:
                guard let text = head["content-range"], let contentRange = ContentRange(parsing: text),
                      let range = contentRange.range, range.start == 0 else {
                    throw SpateError.invalidResponse("the probe's 206 reply has a bad Content-Range: \(head["content-range"]?.prefix(80) ?? "none")")
                }
                _ = range
                let rangesUsable = head["accept-ranges"]?.lowercased() != "none" && contentRange.completeLength != nil
                return remoteFile(target, head: head, size: contentRange.completeLength, acceptsRanges: rangesUsable)
            case 200:
                var size: Int64?
                if head["transfer-encoding"] == nil, let text = head["content-length"] {
                    size = ContentRange.parseDecimal(text)
                }
                return remoteFile(target, head: head, size: size, acceptsRanges: false)
            case 416:
                if let contentRange = head["content-range"].flatMap(ContentRange.init(parsing:)),
                   contentRange.range == nil, contentRange.completeLength == 0 {
                    return remoteFile(target, head: head, size: 0, acceptsRanges: true)
                }
                throw SpateError(.http, "the server refused bytes=0-0 (416) for \(target.redacted)", httpStatus: 416)
            case 202:
                // "Accepted, not ready yet" (Box while a new upload is processed): wait and ask again.
                failures += 1
                let wait = RetryAfter.parse(head["retry-after"], now: Int64(time(nil)))
                try await backOff(FailureVerdict(
                    error: SpateError(.http, "the file at \(target.redacted) is not ready yet (202 Accepted)", httpStatus: 202),
                    retryable: true, retryAfter: wait), failures: failures)
                continue
            default:
                failures += 1
                let verdict = FailureClassifier.statusFailure(head: head, body: sink.errorBody, url: target)
                try await backOff(verdict, failures: failures)
            }
        }
    }

    private func remoteFile(_ target: RemoteURL, head: ResponseHead, size: Int64?, acceptsRanges: Bool) -> RemoteFile {
        RemoteFile(url: target, size: size, acceptsRanges: acceptsRanges,
                   strongETag: RemoteFile.strongETag(from: head["etag"]),
                   lastModified: head["last-modified"], contentDisposition: head["content-disposition"])
    }

    // MARK: - Segmented

    private func fetchSegmented(remote: RemoteFile, size: Int64, sizer: RequestSizer, workers: Int,
                                writer: FileWriter, hasher: WatermarkHasher?) async throws {
        let ledger = SharedLedger(RangeLedger(size: size))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<workers {
                group.addTask {
                    try await self.rangeWorker(ledger: ledger, remote: remote, sizer: sizer, writer: writer, hasher: hasher)
                }
            }
            try await group.waitForAll()
        }
        let complete = ledger.withLock { $0.isComplete }
        guard complete else {
            throw SpateError(.network, "download ended with bytes missing (internal error)")
        }
    }

    /// One connection's worth of work: take the lowest pending bytes, fetch them, record what
    /// arrived, repeat until nothing is pending. A failed request's remaining bytes go back to
    /// pending and are fetched from where they stopped.
    private func rangeWorker(ledger: SharedLedger, remote: RemoteFile, sizer: RequestSizer,
                             writer: FileWriter, hasher: WatermarkHasher?) async throws {
        var failures = 0
        while true {
            try Task.checkCancellation()
            let assignment = ledger.withLock { l in l.assign(maxBytes: sizer.nextRequestBytes(unassigned: l.unassignedBytes)) }
            guard let assignment else { return }
            let sink = RangeSink(requested: assignment.range, writer: writer, remote: remote, counters: counters)
            let outcome: TransferOutcome
            do {
                outcome = try await perform(rangeSpec(assignment.range, remote: remote), sink: sink)
            } catch {
                // Cancelled: the loop no longer touches the sink; let its writes land first.
                _ = await sink.flush()
                ledger.withLock { $0.finish(assignment.id, doneThrough: sink.position) }
                throw error
            }
            // Bytes count as done only once they are in the file (the digest reads them back).
            if let writeError = await sink.flush() {
                ledger.withLock { $0.finish(assignment.id, doneThrough: assignment.range.start) }
                throw writeError
            }
            let watermark = ledger.withLock { l -> Int64 in
                l.finish(assignment.id, doneThrough: sink.position)
                return l.watermark
            }
            hasher?.advance(to: watermark)
            if sink.position == assignment.range.end && outcome.completedNormally { 
                failures = 0
                continue
            }
            if sink.position > assignment.range.start { failures = 0 }
            failures += 1
            let verdict = FailureClassifier.rangeFailure(outcome, sink: sink, url: remote.url)
            try await backOff(verdict, failures: failures)
        }
    }

    // MARK: - Single stream

    /// Downloads the whole body in one request (no range support, or unknown length).
    /// A failure part-way starts over from byte 0: the server cannot resume.
    private func fetchStream(remote: RemoteFile, writer: FileWriter) async throws -> Int64 {
        var failures = 0
        while true {
            try Task.checkCancellation()
            let sink = StreamSink(writer: writer, remote: remote, counters: counters)
            let before = counters.bytesWritten.load(ordering: .relaxed)
            let outcome: TransferOutcome
            do {
                outcome = try await perform(streamSpec(remote: remote), sink: sink)
            } catch {
                _ = await sink.flush()
                throw error
            }
            if let writeError = await sink.flush() { throw writeError }
            let expected = sink.announcedLength ?? remote.size
            if outcome.completedNormally && sink.errorStatus == nil && (expected == nil || sink.position == expected) {
                return sink.position
            }
            // Progress shown must not count bytes that will be written again.
            counters.bytesWritten.store(before, ordering: .relaxed)
            failures += 1
            var verdict = FailureClassifier.streamFailure(outcome, sink: sink, url: remote.url)
            if sink.position > 0 {
                verdict.error = SpateError(verdict.error.kind, verdict.error.message + "; the server cannot resume, starting over",
                                           httpStatus: verdict.error.httpStatus)
            }
            try await backOff(verdict, failures: failures)
        }
    }
}

/// The mode a new file gets: 0666 minus the process umask, like any file a program creates.
enum FileMode {
    static let newFileMode: mode_t = {
        let mask = umask(0o022)
        umask(mask)
        return 0o666 & ~mask
    }()
}

/// A small, fast, seedable generator (for retry jitter): SplitMix64.
struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func nextUnitInterval() -> Double { Double(next() >> 11) / Double(1 << 53) }
}

/// The ledger behind a lock, shared by the range workers of one download.
final class SharedLedger: Sendable {
    private let mutex: Mutex<RangeLedger>
    init(_ ledger: RangeLedger) { mutex = Mutex(ledger) }
    func withLock<T>(_ body: (inout RangeLedger) -> T) -> T { mutex.withLock { body(&$0) } }
}
