import Glibc
import Spate

/// Headers that carry secrets, read from the environment or files so they never appear in argv
/// (where every user of the machine can read them in /proc).
enum SecretInputs {
    static let maxFileBytes = 64 * 1024

    static func headers(bearerTokenEnv: String?, bearerTokenFile: String?, headerFile: String?) throws(SpateError) -> [HTTPHeader] {
        var headers: [HTTPHeader] = []
        if bearerTokenEnv != nil && bearerTokenFile != nil {
            throw SpateError(.usage, "use either --bearer-token-env or --bearer-token-file, not both")
        }
        if let name = bearerTokenEnv {
            guard let value = getenv(name).map({ String(cString: $0) }) else {
                throw SpateError(.usage, "--bearer-token-env: the environment variable \(name) is not set")
            }
            headers.append(try bearer(value, source: "the environment variable \(name)"))
        }
        if let path = bearerTokenFile {
            headers.append(try bearer(try readFile(path, what: "--bearer-token-file"), source: path))
        }
        if let path = headerFile {
            let text = try readFile(path, what: "--header-file")
            // Split on the bytes: "\r\n" is one `Character`, which a split on "\n" never finds.
            for (number, rawLine) in text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() {
                let line = String(decoding: rawLine.last == UInt8(ascii: "\r") ? rawLine.dropLast() : rawLine[...], as: UTF8.self)
                let trimmed = line.trimmingSpacesAndTabs()
                if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
                do {
                    headers.append(try HTTPHeader(parsing: line))
                } catch {
                    throw SpateError(.usage, "\(path) line \(number + 1): \(error.message)")
                }
            }
        }
        return headers
    }

    static func bearer(_ raw: String, source: String) throws(SpateError) -> HTTPHeader {
        let token = raw.trimmingSpacesAndTabs().trimmingTrailingNewlines()
        guard !token.isEmpty else { throw SpateError(.usage, "the bearer token in \(source) is empty") }
        guard !token.contains(where: { $0 == "\n" || $0 == "\r" || $0 == "\0" || $0 == " " }) else {
            throw SpateError(.usage, "the bearer token in \(source) contains spaces or line breaks")
        }
        return try HTTPHeader(name: "Authorization", value: "Bearer \(token)")
    }

    /// The `.netrc` to log in with: `--netrc-file PATH`, or with `--netrc` `$HOME/.netrc`; nil
    /// for neither. The file must be readable now (a wrong path fails before anything is sent);
    /// libcurl reads it for each request's own host.
    static func netrcFile(netrc: Bool, path: String?) throws(SpateError) -> String? {
        guard netrc || path != nil else { return nil }
        let file: String
        if let path {
            file = path
        } else {
            guard let home = getenv("HOME").map({ String(cString: $0) }), !home.isEmpty else {
                throw SpateError(.usage, "--netrc: HOME is not set; use --netrc-file PATH")
            }
            file = home + "/.netrc"
        }
        guard access(file, R_OK) == 0 else {
            throw SpateError(.usage, "\(path != nil ? "--netrc-file" : "--netrc") \(file): \(String(cString: strerror(errno)))")
        }
        return file
    }

    static func readFile(_ path: String, what: String, maxBytes: Int = maxFileBytes) throws(SpateError) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SpateError(.usage, "\(what) \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: maxBytes + 1)
        var count = 0
        while count < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + count, $0.count - count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            count += n
        }
        guard count <= maxBytes else { throw SpateError(.usage, "\(what) \(path) is larger than \(ByteSize.format(Int64(maxBytes)))") }
        return String(decoding: bytes[0..<count], as: UTF8.self)
    }
}

extension String {
    func trimmingSpacesAndTabs() -> String {
        var s = Substring(self)
        while let c = s.first, c == " " || c == "\t" { s.removeFirst() }
        while let c = s.last, c == " " || c == "\t" { s.removeLast() }
        return String(s)
    }

    func trimmingTrailingNewlines() -> String {
        var s = self
        while s.hasSuffix("\n") || s.hasSuffix("\r") || s.hasSuffix("\r\n") { s.removeLast() }
        return s
    }
}
