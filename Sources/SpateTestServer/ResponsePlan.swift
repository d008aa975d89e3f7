import SpateTestContent

/// What the test server sends for one request: status, headers exactly as listed (no header is
/// added behind the plan's back), a body, and optional faults.
///
/// Tests start from `TestServer.standardPlan(for:)` and change what they need.
public struct ResponsePlan: Sendable {
    public enum Body: Sendable {
        case empty
        case bytes([UInt8])
        /// Bytes `start ..< end` of generated content.
        case content(GeneratedContent, start: Int64, end: Int64)

        public var count: Int64 {
            switch self {
            case .empty: 0
            case .bytes(let b): Int64(b.count)
            case .content(_, let start, let end): end - start
            }
        }
    }

    public var status: Int
    public var reason: String
    public var headers: [(name: String, value: String)]
    public var body: Body
    /// Send only this many body bytes, then close the connection.
    public var closeAfterBodyBytes: Int64?
    /// Send only this many body bytes, then go silent with the connection open.
    public var stallAfterBodyBytes: Int64?
    /// Pace the body at this many bytes per second.
    public var bytesPerSecond: Int?
    /// Close the connection after the response.
    public var closeAfterResponse = false
    /// Hold the reply this long after the request arrived: a network's round trip, which the
    /// loopback hides (this kernel has no netem). Requests queued behind it on the connection
    /// wait their turn, as they would on a real connection.
    public var firstByteDelay: Duration?
    /// Sent instead of the status line and headers when set: a broken reply exactly as given
    /// (an empty string makes an HTTP/0.9 reply, the body alone).
    public var rawHead: String?

    public init(status: Int, reason: String? = nil, headers: [(name: String, value: String)] = [], body: Body = .empty) {
        self.status = status
        self.reason = reason ?? ResponsePlan.reasonPhrase(status)
        self.headers = headers
        self.body = body
    }

    /// Replaces (or adds) a header.
    public mutating func setHeader(_ name: String, _ value: String?) {
        headers.removeAll { $0.name.lowercased() == name.lowercased() }
        if let value { headers.append((name, value)) }
    }

    public func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    /// A plain response with a text body and a matching Content-Length.
    public static func text(_ status: Int, _ text: String, contentType: String = "text/plain",
                            headers: [(name: String, value: String)] = []) -> ResponsePlan {
        let bytes = Array(text.utf8)
        var plan = ResponsePlan(status: status, headers: headers, body: .bytes(bytes))
        plan.setHeader("Content-Type", contentType)
        plan.setHeader("Content-Length", String(bytes.count))
        return plan
    }

    static func reasonPhrase(_ status: Int) -> String {
        switch status {
        case 200: "OK"
        case 202: "Accepted"
        case 206: "Partial Content"
        case 301: "Moved Permanently"
        case 302: "Found"
        case 303: "See Other"
        case 307: "Temporary Redirect"
        case 308: "Permanent Redirect"
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 410: "Gone"
        case 416: "Range Not Satisfiable"
        case 429: "Too Many Requests"
        case 500: "Internal Server Error"
        case 503: "Service Unavailable"
        default: "Status"
        }
    }
}
