import Synchronization

/// Builds the requests of one download: the probe, the ranges and the single stream, with the
/// user's headers only where they may go.
struct RequestBuilder: Sendable {
    /// The URL the user gave (redirect targets are compared with its origin).
    let url: RemoteURL
    let options: DownloadOptions
    /// Whether range requests still carry `If-Range` (shared by the download's copies).
    let ifRange = IfRangeSwitch()
    /// Where the user's headers may go: the origin of the URL the user gave, also for the
    /// builder of a mirror (`forMirror`), whose `url` is the mirror's.
    private var credentialsOrigin: RemoteURL.Origin?

    init(url: RemoteURL, options: DownloadOptions) {
        self.url = url
        self.options = options
    }

    /// A builder that probes `mirror` and sends the user's headers only where this one does:
    /// credentials given for one host never go to another.
    func forMirror(_ mirror: RemoteURL) -> RequestBuilder {
        var builder = RequestBuilder(url: mirror, options: options)
        builder.credentialsOrigin = credentialsOrigin ?? url.origin
        return builder
    }

    /// The user's headers, when they may go to `target` (same scheme, host and port as the
    /// original URL, or `--location-trusted`). Credentials never cross origins otherwise
    /// (CVE-2018-1000007, CVE-2022-27774, CVE-2022-27776).
    /// A mirror's builder ignores `--location-trusted`, which trusts the user's URL's
    /// redirects, not other sources.
    func userHeaders(for target: RemoteURL) -> [String] {
        if let credentialsOrigin {
            return target.origin == credentialsOrigin ? options.headers.map(\.line) : []
        }
        guard target.origin == url.origin || options.locationTrusted else { return [] }
        return options.headers.map(\.line)
    }

    func tuning(bufferBytes: Int) -> TransferTuning {
        TransferTuning(
            bufferBytes: bufferBytes, connectTimeout: options.connectTimeout,
            stallLimit: StallWatchdog.Limit(bytesPerSecond: options.lowSpeedBytesPerSecond, window: options.lowSpeedWindow),
            caCertificatePath: options.caCertificatePath, insecure: options.insecure, addressFamily: options.addressFamily,
            proxy: options.proxy, noProxy: options.noProxy, netrcFile: options.netrcFile,
            userAgent: options.userAgent ?? TransferTuning.defaultUserAgent, resolve: options.resolve.map(\.curlEntry),
            verbose: options.verbose,
            http2: options.http2)
    }

    /// The probe of `target`: `Range: bytes=0-0`, not HEAD (presigned GET URLs often reject HEAD).
    func probe(_ target: RemoteURL, bufferBytes: Int, slot: BudgetSlot, wholeFileBytes: Int = 0) -> TransferSpec {
        var headers = userHeaders(for: target)
        headers.append("Range: bytes=0-\(max(0, wholeFileBytes - 1))")
        headers.append("Accept-Encoding: identity")
        return TransferSpec(url: target.string, headers: headers, tuning: tuning(bufferBytes: bufferBytes),
                            secretPath: target.isRedirectTarget, origin: slot.origin, hostBudget: slot.hostAllowed)
    }

    /// A request for remote bytes `range` of `remote`, with `If-Range` so a changed file can
    /// never be mixed in.
    /// - Parameter sendIfRange: from `sendsIfRange(for:)` when the request's sink was made.
    func range(_ range: ByteRange, of remote: RemoteFile, fresh: Bool, sendIfRange: Bool, bufferBytes: Int,
               slot: BudgetSlot) -> TransferSpec {
        var headers = userHeaders(for: remote.url)
        headers.append("Range: \(range.httpRangeValue)")
        headers.append("Accept-Encoding: identity")
        if sendIfRange, let validator = remote.ifRangeValidator { headers.append("If-Range: \(validator)") }
        return TransferSpec(url: remote.url.string, headers: headers, tuning: tuning(bufferBytes: bufferBytes),
                            freshConnection: fresh, secretPath: remote.url.isRedirectTarget, origin: slot.origin, hostBudget: slot.hostAllowed)
    }

    /// The whole body in one request (no range support).
    func stream(_ remote: RemoteFile, bufferBytes: Int, slot: BudgetSlot) -> TransferSpec {
        var headers = userHeaders(for: remote.url)
        headers.append("Accept-Encoding: identity")
        return TransferSpec(url: remote.url.string, headers: headers, tuning: tuning(bufferBytes: bufferBytes),
                            secretPath: remote.url.isRedirectTarget, origin: slot.origin, hostBudget: slot.hostAllowed)
    }
}

extension RequestBuilder {
    /// Whether a range request for `remote` carries `If-Range` now.
    func sendsIfRange(for remote: RemoteFile) -> Bool { remote.ifRangeValidator != nil && ifRange.isOn }
}

/// `If-Range`, on until the server shows it ignores it.
///
/// Why it can be turned off: Apache treats a validator younger than a second as weak (a file
/// modified in the last second: its ETag is `W/`, its Last-Modified not yet trusted) and
/// answers every `If-Range` with 200 and the whole file, so a download would retry the same
/// 200 until its budget ends. Without `If-Range` nothing is mixed either: every 206 is still
/// checked against the probe's validator (`RemoteFile.validatorMismatch`), and a changed file
/// stops the download.
final class IfRangeSwitch: Sendable {
    private let off = Atomic<Bool>(false)

    var isOn: Bool { !off.load(ordering: .relaxed) }

    /// Turns it off; true only for the call that did (to say so once).
    func turnOff() -> Bool { off.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged }
}
