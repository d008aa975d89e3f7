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
    func summary(limit: Int = 200) -> String {
        var text = ""
        var lastWasSpace = true
        for scalar in String(decoding: bytes, as: UTF8.self).unicodeScalars {
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
