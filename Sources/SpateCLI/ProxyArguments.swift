import Spate

/// Checks `--proxy` and `--noproxy` before anything is sent.
///
/// Why credentials are refused on the command line: every process on the machine can read
/// another's arguments (`ps`), and spate keeps secrets out of argv. libcurl reads the proxy
/// environment variables itself (`https_proxy=http://user:password@proxy:3128`), credentials
/// included, so that is where they go.
enum ProxyArguments {
    /// The schemes libcurl speaks to a proxy (none: `http://`).
    static let schemes: Set<String> = ["http", "https", "socks4", "socks4a", "socks5", "socks5h"]

    /// `--proxy URL`: "" turns the environment's proxy off; else a proxy URL without
    /// credentials.
    static func proxy(_ text: String) throws(SpateError) -> String {
        if text.isEmpty { return "" }
        if text.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7F }) {
            throw SpateError(.usage, "--proxy: the URL holds a space or a control character")
        }
        var rest = Substring(text)
        if let separator = rest.firstRange(of: "://") {
            let scheme = rest[..<separator.lowerBound].lowercased()
            guard schemes.contains(scheme) else {
                throw SpateError(.usage, "--proxy: unsupported proxy scheme \(scheme.prefix(20))://; use one of http, https, socks4, socks4a, socks5, socks5h")
            }
            rest = rest[separator.upperBound...]
        }
        let authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        if authority.contains("@") {
            throw SpateError(.usage, "--proxy: credentials in the proxy URL would show in the process list; put the whole proxy URL in the https_proxy (or http_proxy, ALL_PROXY) environment variable instead")
        }
        guard !authority.isEmpty else { throw SpateError(.usage, "--proxy: no proxy host in \(text.prefix(100))") }
        return text
    }

    /// `--noproxy LIST`, handed to libcurl as given (its `NO_PROXY` syntax).
    static func noProxy(_ text: String) throws(SpateError) -> String {
        if text.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }) {
            throw SpateError(.usage, "--noproxy: the list holds a control character")
        }
        return text
    }
}
