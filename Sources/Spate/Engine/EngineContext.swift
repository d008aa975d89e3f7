import Glibc
import Synchronization

/// What every part of one download shares: the options, the transfer loop, counters, events,
/// and the request and retry helpers.
final class EngineContext: Sendable {
    let url: RemoteURL
    let options: DownloadOptions
    let emit: @Sendable (DownloadEvent) -> Void
    let loop: CurlLoop
    let counters = DownloadCounters()
    private let stats = Mutex(Stats())

    struct Stats {
        var knownSize: Int64?
        var requests = 0
        var retries = 0
        var random = SplitMix64(seed: UInt64(truncatingIfNeeded: ContinuousClock.now.hashValue))
    }

    init(url: RemoteURL, options: DownloadOptions, emit: @escaping @Sendable (DownloadEvent) -> Void) {
        self.url = url
        self.options = options
        self.emit = emit
        // Hedges and steals can briefly need connections beyond -c while losers close.
        self.loop = CurlLoop(maxConnectionsPerHost: options.connections + 2)
    }

    var snapshot: Stats { stats.withLock { $0 } }

    func setKnownSize(_ size: Int64?) { stats.withLock { $0.knownSize = size } }

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
            caCertificatePath: options.caCertificatePath, insecure: options.insecure, verbose: options.verbose)
    }

    /// A request for output bytes `range`, which are remote bytes `range + remoteOffset`.
    func rangeSpec(_ range: ByteRange, remoteOffset: Int64, remote: RemoteFile, fresh: Bool, bufferBytes: Int) -> TransferSpec {
        let range = ByteRange(range.start + remoteOffset, range.end + remoteOffset)
        var tuning = self.tuning
        tuning.bufferBytes = bufferBytes
        var headers = userHeaders(for: remote.url)
        headers.append("Range: \(range.httpRangeValue)")
        headers.append("Accept-Encoding: identity")
        if let validator = remote.ifRangeValidator { headers.append("If-Range: \(validator)") }
        return TransferSpec(url: remote.url.string, headers: headers, tuning: tuning, freshConnection: fresh,
                            secretPath: remote.url.isRedirectTarget)
    }

    func streamSpec(remote: RemoteFile) -> TransferSpec {
        var tuning = self.tuning
        tuning.bufferBytes = options.receiveBufferBytes ?? 256 * 1024  // one connection: the whole budget
        var headers = userHeaders(for: remote.url)
        headers.append("Accept-Encoding: identity")
        return TransferSpec(url: remote.url.string, headers: headers, tuning: tuning, secretPath: remote.url.isRedirectTarget)
    }

    func perform(_ spec: TransferSpec, sink: any ResponseSink, handle: TransferHandle? = nil) async throws -> TransferOutcome {
        stats.withLock { $0.requests += 1 }
        counters.activeTransfers.add(1, ordering: .relaxed)
        defer { counters.activeTransfers.subtract(1, ordering: .relaxed) }
        return try await loop.perform(spec, sink: sink, handle: handle)
    }

    /// Waits before a retry, or throws the verdict's error when retrying cannot help or the
    /// budget is spent. An attempt that is not `counted` (a throttling reply while the
    /// connection count is still coming down) waits at least `floor` and spends no budget.
    func backOff(_ verdict: FailureVerdict, failures: Int, counted: Bool = true, atLeast floor: Duration = .zero) async throws {
        guard verdict.retryable, !counted || failures <= options.retry.maxRetries else {
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
        let delay = max(floor, options.retry.delay(attempt: failures, retryAfter: verdict.retryAfter, random: random))
        emit(.retrying(reason: verdict.error.message, attempt: failures, delay: delay))
        try await Task.sleep(for: delay)
    }
}
