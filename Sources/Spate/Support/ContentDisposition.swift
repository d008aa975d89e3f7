/// The file name in a `Content-Disposition` header (RFC 6266), as the server proposes it.
///
/// `filename*` (RFC 8187 ext-value: `charset'language'percent-encoded`, UTF-8 or ISO-8859-1)
/// wins over `filename`. The result is the raw proposal: callers must sanitize it
/// (`FilePaths.sanitizedFileName`), because it comes from the server.
public enum ContentDisposition {
    public static func fileName(from header: String?) -> String? {
        guard let header else { return nil }
        var plain: String?
        var extended: String?
        for (name, value) in parameters(header) {
            switch name {
            case "filename*": extended = extended ?? decodeExtValue(value)
            case "filename": plain = plain ?? value
            default: break
            }
        }
        let chosen = extended ?? plain
        return (chosen?.isEmpty ?? true) ? nil : chosen
    }

    /// `type; a=b; c="quoted \"x\""` → [(a, b), (c, quoted "x")]; names lower-cased.
    static func parameters(_ header: String) -> [(String, String)] {
        var result: [(String, String)] = []
        var chars = Array(header.unicodeScalars)[...]
        // Skip the disposition type.
        while let c = chars.first, c != ";" { chars.removeFirst() }
        while !chars.isEmpty {
            chars.removeFirst()  // ";"
            while chars.first == " " || chars.first == "\t" { chars.removeFirst() }
            var name = ""
            while let c = chars.first, c != "=", c != ";" { name.unicodeScalars.append(c); chars.removeFirst() }
            guard chars.first == "=" else { continue }
            chars.removeFirst()
            while chars.first == " " || chars.first == "\t" { chars.removeFirst() }
            var value = ""
            if chars.first == "\"" {
                chars.removeFirst()
                while let c = chars.first, c != "\"" {
                    chars.removeFirst()
                    if c == "\\", let escaped = chars.first {
                        value.unicodeScalars.append(escaped)
                        chars.removeFirst()
                    } else {
                        value.unicodeScalars.append(c)
                    }
                }
                if chars.first == "\"" { chars.removeFirst() }
                while let c = chars.first, c != ";" { chars.removeFirst() }
            } else {
                while let c = chars.first, c != ";" { value.unicodeScalars.append(c); chars.removeFirst() }
                value = value.trimmingSpaces()
            }
            result.append((name.trimmingSpaces().lowercased(), value))
        }
        return result
    }

    /// `UTF-8''%e2%82%ac%20rates` → `€ rates`; nil for unknown charsets or bad encodings.
    static func decodeExtValue(_ value: String) -> String? {
        let parts = value.split(separator: "'", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3 else { return nil }
        let charset = parts[0].lowercased()
        var bytes: [UInt8] = []
        var it = Array(parts[2].utf8)[...]
        while let b = it.popFirst() {
            if b == UInt8(ascii: "%") {
                guard it.count >= 2, let hi = PercentEncoding.hexValue(it[it.startIndex]),
                      let lo = PercentEncoding.hexValue(it[it.startIndex + 1]) else { return nil }
                bytes.append(hi << 4 | lo)
                it = it.dropFirst(2)
            } else {
                bytes.append(b)
            }
        }
        switch charset {
        case "utf-8": return String(validating: bytes, as: UTF8.self)
        case "iso-8859-1": return String(String.UnicodeScalarView(bytes.map { Unicode.Scalar($0) }))
        default: return nil
        }
    }
}
