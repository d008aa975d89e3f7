/// One request as the test server received it.
public struct RequestInfo: Sendable {
    /// 1-based arrival number across the whole server.
    public let index: Int
    /// 1-based number of this request on its connection (2 and up means keep-alive reuse).
    public let connectionRequestIndex: Int
    /// A number identifying the connection (unique per server run).
    public let connectionID: Int
    /// The local address the request arrived on (127.0.0.1, 127.0.0.2, ...).
    public let host: String
    public let method: String
    /// The request target (path and query); for a request sent to a proxy (absolute form,
    /// RFC 9112 §3.2.2) the path and query of its URL.
    public let uri: String
    /// The scheme and authority of an absolute-form target (`http://127.0.0.2:8080`): the
    /// client took this server for a proxy, and this is the origin it asked for. Nil for the
    /// usual origin-form target.
    public let proxiedOrigin: String?
    public let headers: [(name: String, value: String)]
    /// Replies in progress on the whole server when this request arrived (including this one).
    public let concurrentRequests: Int
    /// Replies in progress on this request's host (local address) when it arrived, including
    /// this one.
    public let concurrentRequestsOnHost: Int
    /// Connections open to this request's host when it arrived, including its own.
    public let openConnectionsOnHost: Int
    /// When the request arrived (monotonic).
    public let arrival: ContinuousClock.Instant

    public init(index: Int, connectionRequestIndex: Int, connectionID: Int, host: String, method: String, uri: String,
                headers: [(name: String, value: String)], concurrentRequests: Int = 1,
                concurrentRequestsOnHost: Int = 1, openConnectionsOnHost: Int = 1,
                arrival: ContinuousClock.Instant = .now) {
        self.index = index
        self.connectionRequestIndex = connectionRequestIndex
        self.connectionID = connectionID
        self.host = host
        self.method = method
        // Absolute form: the server answers as the proxy (and the origin) it was taken for.
        if let schemeEnd = uri.firstRange(of: "://"), uri.hasPrefix("http") {
            let afterScheme = uri[schemeEnd.upperBound...]
            let pathStart = afterScheme.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? afterScheme.endIndex
            self.proxiedOrigin = String(uri[..<pathStart])
            let target = String(uri[pathStart...])
            self.uri = target.hasPrefix("/") ? target : "/" + target
        } else {
            self.proxiedOrigin = nil
            self.uri = uri
        }
        self.headers = headers
        self.concurrentRequests = concurrentRequests
        self.concurrentRequestsOnHost = concurrentRequestsOnHost
        self.openConnectionsOnHost = openConnectionsOnHost
        self.arrival = arrival
    }

    /// The path without the query.
    public var path: String {
        String(uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
    }

    /// The query without `?`, if any.
    public var query: String? {
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        return parts.count == 2 ? String(parts[1]) : nil
    }

    /// A query parameter's raw value.
    public func queryValue(_ name: String) -> String? {
        for pair in (query ?? "").split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if kv.first.map(String.init) == name { return kv.count == 2 ? String(kv[1]) : "" }
        }
        return nil
    }

    /// The first value of a header (case-insensitive name).
    public func header(_ name: String) -> String? {
        let lower = name.lowercased()
        return headers.first { $0.name.lowercased() == lower }?.value
    }
}
