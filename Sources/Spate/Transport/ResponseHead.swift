/// The status line and headers of one HTTP response, as received.
public struct ResponseHead: Sendable, Hashable {
    public var status: Int
    /// Header names lower-cased, values trimmed, in arrival order.
    public var fields: [(name: String, value: String)]

    public init(status: Int, fields: [(name: String, value: String)] = []) {
        self.status = status
        self.fields = fields
    }

    /// The first value of a header (names are case-insensitive).
    public subscript(name: String) -> String? {
        let lower = name.lowercased()
        return fields.first(where: { $0.name == lower })?.value
    }

    /// Every value of a header, in order.
    public func values(_ name: String) -> [String] {
        let lower = name.lowercased()
        return fields.filter { $0.name == lower }.map(\.value)
    }

    public static func == (a: ResponseHead, b: ResponseHead) -> Bool {
        a.status == b.status && a.fields.elementsEqual(b.fields, by: { $0 == $1 })
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(status)
        for f in fields { hasher.combine(f.name); hasher.combine(f.value) }
    }
}

/// Accumulates header lines from libcurl's header callback into a `ResponseHead`, with bounds
/// (CVE-2023-38039: a server must not be able to make the client buffer unlimited headers).
struct ResponseHeadBuilder {
    static let maxHeaderBytes = 64 * 1024
    static let maxFields = 256

    private(set) var status: Int?
    private(set) var fields: [(name: String, value: String)] = []
    private(set) var totalBytes = 0
    private(set) var complete = false

    enum LineResult { case more, headComplete, tooLarge, malformed }

    /// Feeds one raw header line (libcurl hands them over one at a time, CRLF included).
    mutating func feed(_ line: UnsafeRawBufferPointer) -> LineResult {
        totalBytes += line.count
        if totalBytes > Self.maxHeaderBytes { return .tooLarge }
        // Strip the line ending on bytes: in Swift, "\r\n" is one Character.
        var length = line.count
        while length > 0 && (line[length - 1] == 0x0A || line[length - 1] == 0x0D) { length -= 1 }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: line[0..<length]), as: UTF8.self)
        if text.hasPrefix("HTTP/") {
            // A new status line: an interim (1xx) or a new response starts; forget the old one.
            let parts = text.split(separator: " ", maxSplits: 2)
            guard parts.count >= 2, let code = Int(parts[1]), (100...999).contains(code) else { return .malformed }
            status = code
            fields.removeAll(keepingCapacity: true)
            complete = false
            return .more
        }
        if text.isEmpty {
            guard let status else { return .malformed }
            if status >= 100 && status < 200 { return .more }  // interim response; the real one follows
            complete = true
            return .headComplete
        }
        guard status != nil else { return .malformed }
        if text.first == " " || text.first == "\t" {
            // Obsolete line folding (RFC 9112 §5.2): append to the previous value.
            guard !fields.isEmpty else { return .malformed }
            fields[fields.count - 1].value += " " + text.trimmingSpaces()
            return .more
        }
        // Name and value on bytes (hot with many small files: a Unicode-aware lowercase per
        // header showed in profiles). Names are tokens (RFC 9110 §5.1): ASCII lowercase is
        // exact for them; other bytes are kept as they are.
        let bytes = UnsafeRawBufferPointer(rebasing: line[0..<length])
        guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")) else { return .malformed }
        if fields.count >= Self.maxFields { return .tooLarge }
        let name = String(unsafeUninitializedCapacity: colon) { out in
            for i in 0..<colon {
                let b = bytes[i]
                out[i] = b >= 0x41 && b <= 0x5A ? b | 0x20 : b
            }
            return colon
        }
        var start = colon + 1
        var end = bytes.count
        while start < end && (bytes[start] == 0x20 || bytes[start] == 0x09) { start += 1 }
        while end > start && (bytes[end - 1] == 0x20 || bytes[end - 1] == 0x09) { end -= 1 }
        let value = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self)
        fields.append((name, value))
        return .more
    }

    var head: ResponseHead? {
        guard complete, let status else { return nil }
        return ResponseHead(status: status, fields: fields)
    }
}
