import Glibc

/// Path helpers and the output-name rules.
public enum FilePaths {
    /// The directory part of a path ("." when there is none).
    public static func directory(of path: String) -> String {
        // On bytes: "/" is one UTF-8 byte that is never part of another scalar, so the slice
        // ends on a scalar boundary. (A search by Character breaks graphemes, about 100
        // instructions a character, per file of a batch.)
        guard let slash = path.lastIndex(ofASCII: UInt8(ascii: "/")) else { return "." }
        if slash == path.startIndex { return "/" }
        return String(path[..<slash])
    }

    /// A safe local file name from an untrusted name (a URL segment or Content-Disposition).
    ///
    /// Rules (CVE-2010-2252, CVE-2010-3842, CVE-2016-0754): keep the last component only;
    /// drop `/`, `\`, `:` and control characters; no leading dots (no hidden files, no `..`);
    /// at most 255 bytes of UTF-8; never empty (`fallback` instead).
    public static func sanitizedFileName(_ raw: String, fallback: String = "download") -> String {
        // Last component after either kind of separator.
        let lastComponent = raw.split(whereSeparator: { $0 == "/" || $0 == "\\" }).last.map(String.init) ?? ""
        var scalars = String.UnicodeScalarView()
        for scalar in lastComponent.unicodeScalars {
            if scalar.value < 0x20 || scalar.value == 0x7F { continue }
            if (0x80...0x9F).contains(scalar.value) { continue }
            if scalar == ":" || scalar == "/" || scalar == "\\" { continue }
            scalars.append(scalar)
        }
        var name = String(scalars)
        // Dots and spaces together: " .bashrc" must not become ".bashrc" (found by fuzzing).
        name = String(name.drop(while: { $0 == "." || $0 == " " }))
        while name.hasSuffix(" ") { name.removeLast() }
        while name.utf8.count > 255 { name.removeLast() }
        return name.isEmpty ? fallback : name
    }

    /// The default output name for a URL: its last path segment, percent-decoded, sanitized.
    public static func defaultFileName(for url: RemoteURL) -> String {
        let segment = url.path.split(separator: "/", omittingEmptySubsequences: false).last.map(String.init) ?? ""
        return sanitizedFileName(PercentEncoding.decode(segment))
    }

    /// Whether the directory that would hold `path` exists and is writable by this process.
    public static func directoryIsWritable(for path: String) -> Bool {
        let dir = directory(of: path)
        var info = stat()
        guard stat(dir, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else { return false }
        return access(dir, W_OK | X_OK) == 0
    }

    /// Whether anything (file, directory, dangling symlink) exists at `path`.
    public static func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }
}

/// RFC 3986 percent-decoding (invalid escapes are kept literally; invalid UTF-8 is repaired).
public enum PercentEncoding {
    public static func decode(_ s: String) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(s.utf8.count)
        var it = Array(s.utf8)[...]
        while let b = it.popFirst() {
            if b == UInt8(ascii: "%"), it.count >= 2,
               let hi = hexValue(it[it.startIndex]), let lo = hexValue(it[it.startIndex + 1]) {
                bytes.append(hi << 4 | lo)
                it = it.dropFirst(2)
            } else {
                bytes.append(b)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

extension FilePaths {
    /// Whether `path` names a directory (following symlinks).
    public static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }
}
