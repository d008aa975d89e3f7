import SpateTestContent

/// Backendless Files downloads, as the documentation describes them:
///
/// - a plain GET of `/<application id>/<REST API key>/files/<path>/<file name>` on the native
///   host (the server's first host, standing in for backendlessappcontent.com);
/// - with a custom domain (the second host): `/api/files/<path>/<file name>`, and for files
///   under `/web` the simplified `/<path>/<file name>`;
/// - files protected by an access control list need the header `user-token: <value>` (the
///   value the login call returns); a denied read answers with Backendless's JSON error,
///   `{"code":4000,"message":"User has no permissions to specified resource"}`.
///
/// File names may contain spaces and non-ASCII characters (percent-encoded in URLs).
public final class BackendlessEmulation: Sendable {
    public struct StoredFile: Sendable {
        /// The path inside the file repository, e.g. `docs/My report €.pdf`.
        public let path: String
        public let content: GeneratedContent
        /// Needs `user-token` (an ACL denies anonymous reads).
        public let protected: Bool
    }

    public let server: TestServer
    public let customDomainHost: String
    public let applicationID = "A1B2C3D4-0000-4E5F-8000-0123456789AB"
    public let restAPIKey = "R3ST-K3Y0-0000-4ABC-9999-FEDCBA987654"
    public let userToken = "user-token-F00D-CAFE"
    public let files: [StoredFile]

    public init(server: TestServer, customDomainHost: String = "127.0.0.2", seed: UInt64 = 77) {
        self.server = server
        self.customDomainHost = customDomainHost
        files = [
            StoredFile(path: "docs/My report €.pdf", content: GeneratedContent(seed: seed, size: 3 << 20), protected: false),
            StoredFile(path: "private/salaries 2026.xlsx", content: GeneratedContent(seed: seed + 1, size: 2 << 20), protected: true),
            StoredFile(path: "web/img/Ünïcödé banner.png", content: GeneratedContent(seed: seed + 2, size: 1_500_000), protected: false),
        ]
    }

    /// The native URL of a stored file (percent-encoded).
    public func nativeURL(_ file: StoredFile) -> String {
        server.url("/\(applicationID)/\(restAPIKey)/files/\(Self.encodePath(file.path))")
    }

    /// The custom-domain URL: `/api/files/...`, or the simplified form for files under `web/`.
    public func customDomainURL(_ file: StoredFile, simplified: Bool = false) -> String {
        if simplified, file.path.hasPrefix("web/") {
            return server.url("/" + Self.encodePath(String(file.path.dropFirst(4))), host: customDomainHost)
        }
        return server.url("/api/files/" + Self.encodePath(file.path), host: customDomainHost)
    }

    /// Answers Backendless requests; nil for other paths.
    public func handle(_ request: RequestInfo) -> ResponsePlan? {
        let path = BoxEmulation.percentDecode(request.path)
        let repositoryPath: String
        if request.host == customDomainHost {
            if path.hasPrefix("/api/files/") {
                repositoryPath = String(path.dropFirst("/api/files/".count))
            } else if files.contains(where: { $0.path == "web" + path }) {
                repositoryPath = "web" + path
            } else {
                return nil
            }
        } else {
            let prefix = "/\(applicationID)/"
            guard path.hasPrefix(prefix) else { return nil }
            let rest = path.dropFirst(prefix.count)
            guard rest.hasPrefix("\(restAPIKey)/files/") else {
                return Self.error(400, 8002, "Application ID or REST API key is not valid")
            }
            repositoryPath = String(rest.dropFirst("\(restAPIKey)/files/".count))
        }
        guard let file = files.first(where: { $0.path == repositoryPath }) else {
            return Self.error(404, 6000, "File not found")
        }
        if file.protected && request.header("user-token") != userToken {
            return Self.error(403, 4000, "User has no permissions to specified resource")
        }
        return TestServer.standardPlan(for: request, file: TestServer.File(content: file.content))
    }

    static func error(_ status: Int, _ code: Int, _ message: String) -> ResponsePlan {
        .text(status, "{\"code\":\(code),\"message\":\"\(message)\",\"errorData\":{}}", contentType: "application/json")
    }

    /// Percent-encodes each path segment (spaces, non-ASCII), keeping the slashes.
    static func encodePath(_ path: String) -> String {
        path.split(separator: "/", omittingEmptySubsequences: false).map { BoxEmulation.percentEncode(String($0)) }.joined(separator: "/")
    }
}

extension TestServer {
    /// Serves the Box and Backendless emulations (and everything else as usual).
    public func emulateCloudAPIs(box: BoxEmulation, backendless: BackendlessEmulation) {
        setHook { request in box.handle(request) ?? backendless.handle(request) }
    }
}
