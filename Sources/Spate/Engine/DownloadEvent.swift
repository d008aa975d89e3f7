/// What a running download reports, in order, on `Download.events`.
public enum DownloadEvent: Sendable {
    /// The probe finished: what will be downloaded and how.
    case started(DownloadPlan)
    /// Periodic progress (every `DownloadOptions.progressInterval`).
    case progress(DownloadProgress)
    /// A request failed and will be tried again after `delay`.
    case retrying(reason: String, attempt: Int, delay: Duration)
    /// Something the user should know that is not an error (e.g. no range support).
    case notice(String)
    /// All bytes are on disk; the digest is being finished and compared.
    case verifying
    /// The file is complete, verified and under its final name.
    case finished(DownloadResult)
}

/// The shape of a download, known after the probe.
public struct DownloadPlan: Sendable {
    /// The URL ranges are fetched from, redacted.
    public var url: String
    public var totalBytes: Int64?
    public var acceptsRanges: Bool
    public var connections: Int
    public var requestBytes: Int64?
}

public struct DownloadProgress: Sendable {
    public var bytesDone: Int64
    public var totalBytes: Int64?
    /// Recent throughput (smoothed).
    public var bytesPerSecond: Double
    public var activeConnections: Int
    public var elapsed: Duration

    /// Seconds to go at the recent rate, when the total is known and the rate is positive.
    public var estimatedSecondsRemaining: Double? {
        guard let totalBytes, bytesPerSecond > 0 else { return nil }
        return Double(max(0, totalBytes - bytesDone)) / bytesPerSecond
    }
}

public struct DownloadResult: Sendable {
    public var path: String
    public var bytes: Int64
    public var elapsed: Duration
    /// The digest that was verified: the checksum given, or one the server published.
    public var verifiedChecksum: Checksum?
    /// Where `verifiedChecksum` came from: "--checksum", or the server's header ("Repr-Digest" …).
    public var checksumSource: String? = nil
    /// How long verifying took after the last byte was written (the digest runs during the
    /// download; this is the tail it still had to read).
    public var verificationTail: Duration?
    public var connections: Int
    public var requests: Int
    public var retries: Int
    /// From sending the first request (the probe) to its first response byte.
    public var timeToFirstByte: Duration? = nil
    /// Of `bytes`, those already on disk when this run started (a resume) and not fetched.
    public var bytesResumed: Int64 = 0

    /// The rate of this run: the bytes it fetched (not the resumed ones) over `elapsed`.
    public var bytesPerSecond: Double {
        let seconds = elapsed.secondsDouble
        return seconds > 0 ? Double(max(0, bytes - bytesResumed)) / seconds : 0
    }
}
