/// Everything one HTTP request needs, as a Sendable value handed to the transfer loop.
struct TransferSpec: Sendable {
    var url: String
    /// Complete header lines ("Name: value"), already filtered for the URL's origin.
    var headers: [String]
    var tuning: TransferTuning
    /// Open a new connection instead of reusing one (hedges, retries after a stall).
    var freshConnection = false
    /// The URL's path may be a credential (a redirect target): `--verbose` does not print it.
    var secretPath = false
    /// The host the request goes to (scheme, host, port): its connections are counted, and it
    /// is told of the reply (`HostOutages`).
    var origin: RemoteURL.Origin?
    /// `origin` as the key its connections are counted under ("" without one).
    var host: String { origin?.key ?? "" }
    /// The host's connection budget: when more connections are open to it, this request closes
    /// its own afterwards instead of keeping it (the host throttles and must see them go).
    var hostBudget: Int?
}

/// Per-request settings that come from the download's options.
struct TransferTuning: Sendable {
    /// libcurl's receive buffer: one `recv` and one `pwrite` per buffer, so bigger is cheaper.
    var bufferBytes: Int = 512 * 1024
    var connectTimeout: Duration = .seconds(15)
    /// The stall watchdog's limit; nil turns it off.
    var stallLimit: StallWatchdog.Limit? = StallWatchdog.Limit(bytesPerSecond: 1024, window: .seconds(10))
    var caCertificatePath: String?
    var insecure: Bool = false
    var addressFamily: AddressFamily = .any
    /// `DownloadOptions.proxy` and `noProxy` (nil: libcurl reads the environment).
    var proxy: String?
    var noProxy: String?
    /// `DownloadOptions.netrcFile`.
    var netrcFile: String?
    var userAgent: String = TransferTuning.defaultUserAgent
    static let defaultUserAgent = "spate/\(SpateVersion.string)"
    /// `DownloadOptions.resolve`, as libcurl's entries.
    var resolve: [String] = []
    var verbose: Bool = false
    /// HTTP/2 over TLS when the server offers it; else HTTP/1.1.
    var http2: Bool = false
}

/// The version of this library.
public enum SpateVersion {
    public static let string = "0.1.0"
}

extension Duration {
    /// Whole milliseconds, rounded down (clamped at zero).
    var milliseconds: Int {
        let (seconds, attoseconds) = components
        return max(0, Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000))
    }

    /// The duration in seconds, as a Double.
    public var secondsDouble: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }

    /// Whole nanoseconds (for an atomic counter).
    var wholeNanoseconds: Int64 { components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000 }
}
