import SpateTestContent
import Synchronization

/// Box's "Download a file" endpoint, as its documentation describes it:
///
/// - `GET /2.0/files/{file_id}/content` on the API host (the server's first host);
/// - access with `Authorization: Bearer <token>`, or through a shared link with the header
///   `BoxApi: shared_link=<URL>` or `shared_link=<URL>&shared_link_password=<PW>`;
/// - `?version=<id>` selects a file version (different content);
/// - while a just-uploaded file is not ready: `202 Accepted` with `Retry-After` (seconds);
/// - otherwise `302 Found` to a short-lived download URL on another host (the second host,
///   standing in for dl.boxcloud.com) that needs no credentials, serves byte ranges, and expires
///   (403) after `usesPerDownloadURL` requests;
/// - errors as Box's JSON error objects.
///
/// Every request is recorded by the server, so tests can check which host saw which header.
public final class BoxEmulation: Sendable {
    public struct Version: Sendable {
        public let id: String
        public let content: GeneratedContent
        public let name: String
    }

    public let server: TestServer
    public let downloadHost: String
    public let fileID = "1234567890"
    public let token = "box-demo-token"
    public let sharedLink = "https://app.box.com/s/spate-demo-link"
    public let protectedLink = "https://app.box.com/s/spate-protected-link"
    public let sharedLinkPassword = "letmein"
    public let versions: [Version]
    /// The version served without `?version=`.
    public var currentVersion: Version { versions.last! }

    private struct State {
        var notReadyReplies: Int
        var usesPerDownloadURL: Int
        var nextToken = 1
        var tokens: [String: (version: Int, uses: Int)] = [:]
    }
    private let state: Mutex<State>

    /// - Parameters:
    ///   - size: the size of each version.
    ///   - notReadyReplies: how many content requests get 202 first (a fresh upload).
    ///   - usesPerDownloadURL: requests each download URL serves before it expires.
    public init(server: TestServer, downloadHost: String = "127.0.0.2", size: Int64 = 6 << 20, seed: UInt64 = 2026,
                notReadyReplies: Int = 0, usesPerDownloadURL: Int = 1000) {
        self.server = server
        self.downloadHost = downloadHost
        versions = [
            Version(id: "111", content: GeneratedContent(seed: seed, size: size), name: "Quarterly report v1.pdf"),
            Version(id: "222", content: GeneratedContent(seed: seed + 1, size: size + 1000), name: "Quarterly report €.pdf"),
        ]
        state = Mutex(State(notReadyReplies: notReadyReplies, usesPerDownloadURL: usesPerDownloadURL))
    }

    public var contentPath: String { "/2.0/files/\(fileID)/content" }

    /// The API URL of the file (optionally of one version).
    public func url(version: String? = nil) -> String {
        server.url(contentPath + (version.map { "?version=\($0)" } ?? ""))
    }

    /// Download URLs issued so far.
    public var issuedDownloadURLs: Int { state.withLock { $0.nextToken - 1 } }

    /// Answers Box requests; nil for other paths.
    public func handle(_ request: RequestInfo) -> ResponsePlan? {
        if request.host == downloadHost, request.path.hasPrefix("/d/") { return download(request) }
        guard request.host != downloadHost, request.path == contentPath else { return nil }
        guard request.method == "GET" || request.method == "HEAD" else { return Self.error(405, "method_not_allowed", "Method Not Allowed") }

        // Access: a bearer token, or a shared link (with its password when it has one).
        let bearerOK = request.header("authorization") == "Bearer \(token)"
        var linkOK = false
        if let boxAPI = request.header("boxapi") {
            let fields = Self.formFields(boxAPI)
            if fields["shared_link"] == sharedLink { linkOK = true }
            if fields["shared_link"] == protectedLink {
                guard fields["shared_link_password"] == sharedLinkPassword else {
                    return Self.error(403, "incorrect_shared_item_password", "The password for the shared link is incorrect")
                }
                linkOK = true
            }
        }
        guard bearerOK || linkOK else {
            var plan = Self.error(401, "unauthorized", "Unauthorized")
            plan.setHeader("WWW-Authenticate", "Bearer realm=\"Service\", error=\"invalid_token\"")
            return plan
        }
        let index: Int
        if let id = request.queryValue("version") {
            guard let i = versions.firstIndex(where: { $0.id == id }) else {
                return Self.error(404, "not_found", "Could not find the specified resource")
            }
            index = i
        } else {
            index = versions.count - 1
        }
        let issued: String? = state.withLock { s in
            if s.notReadyReplies > 0 {
                s.notReadyReplies -= 1
                return nil
            }
            let token = "dl\(s.nextToken)x\(index)"
            s.nextToken += 1
            s.tokens[token] = (index, 0)
            return token
        }
        guard let token = issued else {
            var plan = ResponsePlan.text(202, "")
            plan.setHeader("Retry-After", "1")
            return plan
        }
        var plan = ResponsePlan.text(302, "")
        let name = versions[index].name.unicodeScalars.map { $0.isASCII && ($0.properties.isAlphabetic || ".-_0123456789".unicodeScalars.contains($0)) ? String($0) : "_" }.joined()
        plan.setHeader("Location", server.url("/d/\(token)/\(name)", host: downloadHost))
        return plan
    }

    /// The short-lived download URL: ranges, no credentials, 403 once expired.
    private func download(_ request: RequestInfo) -> ResponsePlan {
        let parts = request.path.split(separator: "/")
        guard parts.count >= 2 else { return .text(404, "not found\n") }
        let token = String(parts[1])
        let version: Int? = state.withLock { s in
            guard let entry = s.tokens[token], entry.uses < s.usesPerDownloadURL else { return nil }
            s.tokens[token] = (entry.version, entry.uses + 1)
            return entry.version
        }
        guard let version else {
            return .text(403, "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
                         contentType: "application/xml")
        }
        let v = versions[version]
        var file = TestServer.File(content: v.content, etag: "\"box-\(v.id)\"")
        file.contentDisposition = "attachment; filename=\"\(v.name.unicodeScalars.map { $0.isASCII ? String($0) : "_" }.joined())\"; filename*=UTF-8''\(Self.percentEncode(v.name))"
        return TestServer.standardPlan(for: request, file: file)
    }

    static func error(_ status: Int, _ code: String, _ message: String) -> ResponsePlan {
        .text(status, "{\"type\":\"error\",\"status\":\(status),\"code\":\"\(code)\",\"message\":\"\(message)\",\"request_id\":\"spate-test\"}",
              contentType: "application/json")
    }

    /// `a=1&b=2` (values percent-decoded).
    static func formFields(_ text: String) -> [String: String] {
        var fields: [String: String] = [:]
        for pair in text.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard kv.count == 2 else { continue }
            fields[String(kv[0]).trimmingCharacters(in: " ")] = percentDecode(String(kv[1]))
        }
        return fields
    }

    static func percentDecode(_ s: String) -> String {
        var bytes: [UInt8] = []
        var it = Array(s.utf8)[...]
        while let b = it.popFirst() {
            if b == UInt8(ascii: "%"), it.count >= 2, let v = UInt8(String(decoding: it.prefix(2), as: UTF8.self), radix: 16) {
                bytes.append(v)
                it = it.dropFirst(2)
            } else {
                bytes.append(b)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func percentEncode(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            if (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2D || b == 0x2E || b == 0x5F {
                out.unicodeScalars.append(Unicode.Scalar(b))
            } else {
                let h = String(b, radix: 16, uppercase: true)
                out += "%" + (h.count == 1 ? "0" + h : h)
            }
        }
        return out
    }
}
