/// Keeps the first few hundred bytes of an error response's body, for the error message
/// (Backendless, S3 and Box explain a denial in a small JSON or XML body).
struct ErrorBody {
    static let maxBytes = 4096
    private(set) var bytes: [UInt8] = []

    /// Appends; returns false once enough is kept.
    mutating func append(_ chunk: UnsafeRawBufferPointer) -> Bool {
        let room = Self.maxBytes - bytes.count
        bytes.append(contentsOf: chunk.prefix(room))
        return bytes.count < Self.maxBytes
    }

    /// One line of printable text, at most `limit` characters; empty when nothing useful came.
    /// An HTML page (a web server's stock error page) gives only its `<title>`: its markup
    /// says nothing, and the status line already says what a stock page's title does.
    /// A page without a title gives its first `<h1>` (a hand-written "Your IP is blocked").
    func summary(limit: Int = 200) -> String {
        guard let title = htmlTitle else { return Self.oneLine(String(decoding: bytes, as: UTF8.self), limit: limit) }
        return Self.oneLine(title.isEmpty ? element("h1") ?? "" : title, limit: limit)
    }

    /// The text of the first `<h1>` element (its markup inside left as is), if it is closed.
    /// One pass for the opening tag, one for the closing one: linear in the body.
    private func element(_ name: StaticString) -> String? {
        var at = 0
        while let start = Self.find("<", in: bytes, from: at) {
            at = start + 1
            let after = start + 1 + name.utf8CodeUnitCount
            guard Self.matches(name, in: bytes, at: start + 1), after < bytes.count,
                  bytes[after] == UInt8(ascii: ">") || bytes[after] == 0x20 || bytes[after] == 0x09 else { continue }
            guard let close = bytes[after...].firstIndex(of: UInt8(ascii: ">")) else { return nil }
            var from = close + 1
            while let end = Self.find("</", in: bytes, from: from) {
                if Self.matches(name, in: bytes, at: end + 2) { return String(decoding: bytes[(close + 1)..<end], as: UTF8.self) }
                from = end + 2
            }
            return nil
        }
        return nil
    }

    /// The title of an HTML page (nil: not HTML; "": HTML without a title). Recognised by what
    /// it starts with (`<!DOCTYPE html` or `<html`, after white space), not by the reply's
    /// Content-Type, which the probe does not keep for errors. Markup is matched as ASCII
    /// without case, on the bytes.
    var htmlTitle: String? {
        var i = 0
        while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 }
        guard Self.matches("<!doctype html", in: bytes, at: i) || Self.matches("<html", in: bytes, at: i) else { return nil }
        guard let open = Self.find("<title", in: bytes, from: i),
              let close = bytes[open...].firstIndex(of: UInt8(ascii: ">")),
              let end = Self.find("</title", in: bytes, from: close + 1) else { return "" }
        return String(decoding: bytes[(close + 1)..<end], as: UTF8.self)
    }

    private static func find(_ needle: StaticString, in bytes: [UInt8], from start: Int) -> Int? {
        var i = start
        while i + needle.utf8CodeUnitCount <= bytes.count {
            if matches(needle, in: bytes, at: i) { return i }
            i += 1
        }
        return nil
    }

    /// Whether `bytes` at `offset` are `needle` (lower-case ASCII), in any case.
    private static func matches(_ needle: StaticString, in bytes: [UInt8], at offset: Int) -> Bool {
        guard offset + needle.utf8CodeUnitCount <= bytes.count else { return false }
        for k in 0..<needle.utf8CodeUnitCount {
            let b = bytes[offset + k]
            let lower = b >= 0x41 && b <= 0x5A ? b + 0x20 : b
            if lower != needle.utf8Start[k] { return false }
        }
        return true
    }

    private static func oneLine(_ source: String, limit: Int) -> String {
        var text = ""
        var lastWasSpace = true
        for scalar in source.unicodeScalars {
            let printable = scalar.value >= 0x20 && scalar.value != 0x7F && scalar != "\u{FFFD}"
            if !printable || scalar == " " {
                if !lastWasSpace { text.append(" ") }
                lastWasSpace = true
            } else {
                text.unicodeScalars.append(scalar)
                lastWasSpace = false
            }
            if text.count >= limit { text += "…"; break }
        }
        return text.trimmingSpaces()
    }
}
