import CCurl

/// An absolute http(s) URL, parsed and normalised by libcurl's URL API (`curl_url`), so Spate
/// and the transfers agree on every edge case of URL syntax.
public struct RemoteURL: Sendable, Hashable, CustomStringConvertible {
    /// The full URL as libcurl normalised it.
    public let string: String
    /// `http` or `https`, lower case.
    public let scheme: String
    public let host: String
    /// The port, explicit or the scheme's default.
    public let port: Int
    /// The path, still percent-encoded.
    public let path: String
    /// The query without `?`, still percent-encoded, if any.
    public let query: String?
    /// Whether the URL carries `user:password@`.
    public let hasUserInfo: Bool
    /// Whether the URL came from a redirect rather than from the user. Such URLs are often
    /// signed in their path (Box's dl.boxcloud.com, CDN tokens), so messages show only their
    /// origin.
    public let isRedirectTarget: Bool

    /// Parses an absolute http or https URL.
    public init(_ text: String) throws(SpateError) {
        try self.init(text, base: nil)
    }

    /// Resolves `location` (absolute or relative, as in a redirect) against this URL.
    public func resolving(_ location: String) throws(SpateError) -> RemoteURL {
        try RemoteURL(location, base: self)
    }

    private init(_ text: String, base: RemoteURL?) throws(SpateError) {
        let parsed = try Parsed(text, base: base)
        guard let url = parsed.part(CURLUPART_URL) else { throw .usage("invalid URL \(Redactor.url(text))") }
        self.string = url
        self.scheme = parsed.scheme
        self.host = parsed.host
        self.port = parsed.port
        self.path = parsed.part(CURLUPART_PATH) ?? "/"
        // libcurl's normalised URL shows a query after "?" and user info before "@": without
        // those bytes there is nothing to ask for (a call each, per file of a batch).
        self.query = url.containsByte(where: { $0 == UInt8(ascii: "?") }) ? parsed.part(CURLUPART_QUERY) : nil
        self.hasUserInfo = url.containsByte(where: { $0 == UInt8(ascii: "@") }) && parsed.part(CURLUPART_USER) != nil
        self.isRedirectTarget = base != nil
    }

    /// Checks `text` as `init(_:)` does — libcurl parses it; http or https, a host, a port —
    /// without composing the normalised URL and the other parts only a `RemoteURL` keeps
    /// (libcurl formats each part it returns: the URL alone costs about 7,000 instructions).
    /// The first pass over a manifest checks every line this way. (Composing the URL after a
    /// successful parse fails only without memory.)
    public static func validate(_ text: String) throws(SpateError) {
        _ = try Parsed(text, base: nil)
    }

    /// A URL libcurl parsed, with what every use needs checked: http or https, a host, a port.
    private struct Parsed: ~Copyable {
        let handle: OpaquePointer
        let scheme: String
        let host: String
        let port: Int

        init(_ text: String, base: RemoteURL?) throws(SpateError) {
            guard !text.isEmpty else { throw .usage("invalid URL: empty") }
            if text.containsByte(where: { $0 < 0x20 || $0 == 0x7F }) {
                throw .usage("invalid URL: it contains control characters")
            }
            guard let handle = curl_url() else { throw .usage("invalid URL: out of memory") }
            func fail(_ error: SpateError) -> SpateError {
                curl_url_cleanup(handle)
                return error
            }
            if let base {
                guard curl_url_set(handle, CURLUPART_URL, base.string, 0) == CURLUE_OK else {
                    throw fail(.invalidResponse("cannot use \(Redactor.url(base.string)) as a base URL"))
                }
            }
            let rc = curl_url_set(handle, CURLUPART_URL, text, UInt32(CURLU_NON_SUPPORT_SCHEME))
            guard rc == CURLUE_OK else {
                let reason = String(cString: curl_url_strerror(rc))
                throw fail(.usage("invalid URL \(Redactor.url(text)): \(reason)"))
            }
            let scheme = (Self.part(handle, CURLUPART_SCHEME) ?? "").lowercased()
            guard scheme == "http" || scheme == "https" else {
                throw fail(.usage("unsupported URL scheme \"\(scheme)\": use http or https"))
            }
            guard let host = Self.part(handle, CURLUPART_HOST), !host.isEmpty else {
                throw fail(.usage("invalid URL \(Redactor.url(text)): no host"))
            }
            guard let portText = Self.part(handle, CURLUPART_PORT, CURLU_DEFAULT_PORT), let port = Int(portText) else {
                throw fail(.usage("invalid URL \(Redactor.url(text))"))
            }
            self.handle = handle
            self.scheme = scheme
            self.host = host.lowercased()
            self.port = port
        }

        deinit { curl_url_cleanup(handle) }

        func part(_ what: CURLUPart, _ flags: Int32 = 0) -> String? { Self.part(handle, what, flags) }

        private static func part(_ handle: OpaquePointer, _ what: CURLUPart, _ flags: Int32 = 0) -> String? {
            var out: UnsafeMutablePointer<CChar>?
            guard curl_url_get(handle, what, &out, UInt32(flags)) == CURLUE_OK, let out else { return nil }
            defer { curl_free(out) }
            return String(cString: out)
        }
    }

    /// Scheme, host and port: credentials never cross a change of any of the three.
    public var origin: Origin { Origin(scheme: scheme, host: host, port: port) }

    /// The URL with userinfo removed and query values elided, and for redirect targets the path
    /// too: safe for messages and logs.
    public var redacted: String {
        isRedirectTarget ? Redactor.originOnly(string) : Redactor.url(string)
    }

    public var description: String { redacted }

    public struct Origin: Hashable, Sendable {
        public let scheme: String
        public let host: String
        public let port: Int

        /// `scheme://host:port`.
        public var key: String { "\(scheme)://\(host):\(port)" }
    }
}
