/// A request header given by the user (`-H 'Name: value'`), validated.
///
/// libcurl sends `CURLOPT_HTTPHEADER` lines "verbatim, without any filter" (CVE-2017-6508,
/// CVE-2024-45302 show what CR/LF in a header does), so every line is checked here.
public struct HTTPHeader: Sendable, Hashable, CustomStringConvertible {
    public let name: String
    public let value: String

    /// Headers Spate itself manages per request; a user value would break range requests.
    static let reservedNames: Set<String> = [
        "range", "if-range", "accept-encoding", "content-length", "transfer-encoding", "connection",
        "te", "upgrade", "expect", "host",
    ]

    public init(name: String, value: String) throws(SpateError) {
        guard !name.isEmpty, name.utf8.allSatisfy(HTTPHeader.isTokenCharacter) else {
            throw .usage("invalid header name \(Self.shownName(name)): only letters, digits and !#$%&'*+-.^_`|~ are allowed")
        }
        if value.utf8.contains(where: { $0 == 0x0D || $0 == 0x0A || $0 == 0 }) {
            throw .usage("header \(name) contains CR, LF or NUL")
        }
        if value.utf8.contains(where: { ($0 < 0x20 && $0 != 0x09) || $0 == 0x7F }) {
            throw .usage("header \(name) contains control characters")
        }
        let trimmed = value.trimmingSpaces()
        guard !trimmed.isEmpty else { throw .usage("header \(name) has an empty value") }
        if HTTPHeader.reservedNames.contains(name.lowercased()) {
            throw .usage("header \(name) is managed by spate and cannot be set with -H")
        }
        self.name = name
        self.value = trimmed
    }

    /// Parses `Name: value`.
    public init(parsing line: String) throws(SpateError) {
        if line.utf8.contains(where: { $0 == 0x0D || $0 == 0x0A || $0 == 0 }) {
            throw .usage("header \(Self.shownName(line)) contains CR, LF or NUL")
        }
        guard let colon = line.firstIndex(of: ":") else {
            throw .usage("invalid header \(Self.shownName(line)): expected 'Name: value'")
        }
        try self.init(name: String(line[..<colon]).trimmingSpaces(), value: String(line[line.index(after: colon)...]))
    }

    /// How an error names a header that could not be parsed: its name, quoted, only when the
    /// name clearly ends (at a space, a colon, a CR or LF) within 40 bytes; never the rest.
    /// A malformed line is often a secret with a typo (`Authorization Bearer TOKEN`), or a
    /// bare token (`-H "$TOKEN"`, all name characters), and messages must not show secrets;
    /// nor a CR or LF, which would break the one-line message.
    static func shownName(_ text: String) -> String {
        let name = text.utf8.prefix(while: isTokenCharacter)
        let ends = name.count < text.utf8.count && [0x20, 0x09, 0x3A, 0x0D, 0x0A].contains(text.utf8[name.endIndex])
        guard ends, !name.isEmpty, name.count <= 40 else { return "(not shown)" }
        return "\"" + String(decoding: name, as: UTF8.self) + "\" (the rest not shown)"
    }

    /// The line as sent.
    var line: String { "\(name): \(value)" }

    /// The line with secret values masked, for display.
    public var description: String { Redactor.header(line) }

    static func isTokenCharacter(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        default:
            "!#$%&'*+-.^_`|~".utf8.contains(c)
        }
    }
}
