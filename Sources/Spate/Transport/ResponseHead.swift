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
        let lower = Self.lowercased(name)
        return fields.first(where: { $0.name == lower })?.value
    }

    /// Every value of a header, in order.
    public func values(_ name: String) -> [String] {
        let lower = Self.lowercased(name)
        return fields.filter { $0.name == lower }.map(\.value)
    }

    /// `name` as stored: lower-cased. Callers mostly pass lower-case literals, which are kept
    /// as they are (a new string per look-up of a long name showed in small-file profiles).
    private static func lowercased(_ name: String) -> String {
        name.containsByte(where: { $0 >= 0x41 && $0 <= 0x5A || $0 >= 0x80 }) ? name.lowercased() : name
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
    /// Room made for a reply's fields at its status line (nginx sends 9 on a 206): one
    /// allocation instead of the array doubling five times.
    static let typicalFields = 16

    private(set) var status: Int?
    /// The status line said HTTP/1.0 (see `keepsConnection`).
    private(set) var isHTTP10 = false
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
        // Checked on bytes; a String is made only of what is kept (one per header line was
        // most of a small file's allocations on the transfer thread).
        let bytes = UnsafeRawBufferPointer(rebasing: line[0..<length])
        if bytes.starts(with: "HTTP/".utf8) {
            // A new status line: an interim (1xx) or a new response starts; forget the old one.
            // "HTTP/x[.y] NNN[ reason]": the second field, on bytes (a split of the String
            // took about 7,000 instructions per reply).
            // Blanks (space, tab) before the code are skipped and end it, as libcurl 7.88's
            // own parse of the line (`sscanf` with `%3d`) lets through.
            func isBlank(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 }
            guard var start = bytes.firstIndex(where: isBlank) else { return .malformed }
            while start < bytes.count && isBlank(bytes[start]) { start += 1 }
            var end = start
            while end < bytes.count && !isBlank(bytes[end]) { end += 1 }
            let field = bytes[start..<end]
            guard field.count == 3, field.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return .malformed }
            let code = field.reduce(0) { $0 * 10 + Int($1 - 0x30) }
            guard (100...999).contains(code) else { return .malformed }
            status = code
            isHTTP10 = bytes.starts(with: "HTTP/1.0".utf8)
            fields.removeAll(keepingCapacity: true)
            fields.reserveCapacity(Self.typicalFields)
            complete = false
            return .more
        }
        if bytes.isEmpty {
            guard let status else { return .malformed }
            if status >= 100 && status < 200 { return .more }  // interim response; the real one follows
            complete = true
            return .headComplete
        }
        guard status != nil else { return .malformed }
        if bytes[0] == 0x20 || bytes[0] == 0x09 {
            // Obsolete line folding (RFC 9112 §5.2): append to the previous value.
            guard !fields.isEmpty else { return .malformed }
            fields[fields.count - 1].value += " " + String(decoding: bytes, as: UTF8.self).trimmingSpaces()
            return .more
        }
        // Name and value on bytes (hot with many small files: a Unicode-aware lowercase per
        // header showed in profiles). Names are tokens (RFC 9110 §5.1): ASCII lowercase is
        // exact for them; other bytes are kept as they are.
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

    /// Whether the server keeps the connection open after this reply (RFC 9112 §9.3): not
    /// with `Connection: close`, nor for HTTP/1.0 without `Connection: keep-alive`.
    var keepsConnection: Bool {
        var close = false, keepAlive = false
        for field in fields where field.name == "connection" {
            Self.forEachToken(field.value) { token in
                if Self.equalsIgnoringCase(token, "close") {
                    close = true
                } else if Self.equalsIgnoringCase(token, "keep-alive") {
                    keepAlive = true
                }
            }
        }
        return !close && (!isHTTP10 || keepAlive)
    }

    /// Calls `body` with each comma-separated element of a list value, blanks around it
    /// trimmed (RFC 9110 §5.6.1), on the value's bytes: read for every reply, so no String is
    /// made per token.
    private static func forEachToken(_ value: String, _ body: (UnsafeBufferPointer<UInt8>) -> Void) {
        var value = value
        value.withUTF8 { bytes in
            func isBlank(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 }
            var start = 0
            while start <= bytes.count {
                let comma = bytes[start...].firstIndex(of: UInt8(ascii: ",")) ?? bytes.count
                var first = start, end = comma
                while first < end && isBlank(bytes[first]) { first += 1 }
                while end > first && isBlank(bytes[end - 1]) { end -= 1 }
                body(UnsafeBufferPointer(rebasing: bytes[first..<end]))
                start = comma + 1
            }
        }
    }

    /// ASCII case-insensitive equality of a token with a lowercase ASCII word.
    private static func equalsIgnoringCase(_ token: UnsafeBufferPointer<UInt8>, _ word: StaticString) -> Bool {
        guard token.count == word.utf8CodeUnitCount else { return false }
        let expected = UnsafeBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount)
        for i in 0..<token.count {
            var byte = token[i]
            if byte >= 0x41 && byte <= 0x5A { byte |= 0x20 }
            if byte != expected[i] { return false }
        }
        return true
    }

    var head: ResponseHead? {
        guard complete, let status else { return nil }
        return ResponseHead(status: status, fields: fields)
    }
}
