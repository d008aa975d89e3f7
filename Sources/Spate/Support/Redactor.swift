import Glibc

/// Removes secrets from text meant for people: progress, errors, logs, `--verbose` output and
/// the journal.
///
/// Why elide every query value: signed URLs carry their secret in the query (`X-Amz-Signature`,
/// `sig`, `token`, `access_token`, Box's download tokens) under names nobody can list in full,
/// and a query value is rarely what a reader of an error needs.
public enum Redactor {
    /// Header names whose values are always secret.
    static let secretHeaderNames: Set<String> = [
        "authorization", "proxy-authorization", "cookie", "set-cookie", "boxapi", "user-token",
        "x-api-key", "api-key", "x-auth-token", "x-amz-security-token",
    ]

    /// Free text (libcurl's messages, error bodies) with every word that looks like a URL
    /// passed through `url(_:)`.
    static func urls(in text: String) -> String {
        text.split(separator: " ", omittingEmptySubsequences: false).map { word in
            word.contains("://") ? url(String(word)) : String(word)
        }.joined(separator: " ")
    }

    /// A URL with `user:password@` removed and every query value replaced by `***`.
    public static func url(_ text: String) -> String {
        // Most URLs have nothing to hide: no user info, no query, no fragment, no Backendless
        // key. Checked on bytes (a batch redacts every URL it lists).
        if !text.containsByte(where: { $0 == UInt8(ascii: "@") || $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") }),
           !containsFilesSegment(text) {
            return text
        }
        var s = Substring(text)
        var fragmentless = s
        if let hash = s.firstIndex(of: "#") { fragmentless = s[..<hash] }
        s = fragmentless
        var result = ""
        // userinfo: between "://" and the first "@" before the path.
        if let schemeEnd = s.firstRange(of: "://") {
            let authorityStart = schemeEnd.upperBound
            let afterAuthority = s[authorityStart...].firstIndex(where: { $0 == "/" || $0 == "?" }) ?? s.endIndex
            let authority = s[authorityStart..<afterAuthority]
            result += s[..<authorityStart]
            if let at = authority.lastIndex(of: "@") {
                result += "***@" + authority[authority.index(after: at)...]
            } else {
                result += authority
            }
            s = s[afterAuthority...]
        }
        if let q = s.firstIndex(of: "?") {
            result += redactPath(s[..<q])
            let pairs = s[s.index(after: q)...].split(separator: "&", omittingEmptySubsequences: false)
            let elided = pairs.map { pair -> String in
                if let eq = pair.firstIndex(of: "=") { return pair[..<eq] + "=***" }
                return pair.isEmpty ? "" : "***"
            }
            result += "?" + elided.joined(separator: "&")
        } else {
            result += redactPath(s)
        }
        return result
    }

    /// Whether `text` contains `/files` (where `redactPath` may have a key to hide).
    /// On the string's own bytes (no copies: a batch asks for every URL it lists).
    private static func containsFilesSegment(_ text: String) -> Bool {
        let needle: StaticString = "/files"
        var text = text
        return text.withUTF8 { bytes in
            let count = needle.utf8CodeUnitCount
            guard bytes.count >= count else { return false }
            let first = needle.utf8Start.pointee
            for i in 0...(bytes.count - count) where bytes[i] == first {
                if memcmp(bytes.baseAddress! + i, needle.utf8Start, count) == 0 { return true }
            }
            return false
        }
    }

    /// Backendless puts the application's REST API key in the path:
    /// `/<application id>/<REST API key>/files/...`; the key becomes `***`.
    static func redactPath(_ path: Substring) -> String {
        var segments = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        if segments.count > 3, segments[0].isEmpty, segments[3] == "files", segments[2].count >= 16 {
            segments[2] = "***"
        }
        return segments.joined(separator: "/")
    }

    /// Only `scheme://host:port/…`: for URLs a server chose (redirect targets), whose path may
    /// itself be the credential.
    public static func originOnly(_ text: String) -> String {
        guard let schemeEnd = text.firstRange(of: "://") else { return "…" }
        let rest = text[schemeEnd.upperBound...]
        var authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        if let at = authority.lastIndex(of: "@") { authority = authority[authority.index(after: at)...] }
        return text[..<schemeEnd.upperBound] + authority + "/…"
    }

    /// A header line for display: `Name: ***` when the value is secret.
    public static func header(_ line: String) -> String {
        guard let colon = line.firstIndex(of: ":") else { return line }
        let name = line[..<colon].trimmingSpaces().lowercased()
        if secretHeaderNames.contains(name) {
            let value = line[line.index(after: colon)...].trimmingSpaces()
            if name == "authorization" || name == "proxy-authorization",
               let space = value.firstIndex(of: " ") {
                return "\(line[..<colon]): \(value[..<space]) ***"
            }
            return "\(line[..<colon]): ***"
        }
        return line
    }
}

extension StringProtocol {
    /// The text without leading and trailing spaces and tabs.
    func trimmingSpaces() -> String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { $0 != " " && $0 != "\t" }) else { return "" }
        let last = scalars.lastIndex(where: { $0 != " " && $0 != "\t" })!
        return String(String.UnicodeScalarView(scalars[first...last]))
    }
}
