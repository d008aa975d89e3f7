import Spate

/// One JSON object on one line, built field by field (RFC 8259 strings: `"`, `\` and control
/// characters escaped, everything else UTF-8 as is). `quote` also serves `spate journal show
/// --json`.
///
/// Why not Foundation's JSONSerialization: the library and the `spate` binary do not link
/// Foundation (it would add megabytes of resident memory to every run for a few flat objects).
struct JSONLine {
    private var text = "{"
    private var first = true

    mutating func add(_ key: String, _ value: String?) {
        guard let value else { return addRaw(key, "null") }
        addRaw(key, Self.quote(value))
    }

    mutating func add(_ key: String, _ value: Int64?) { addRaw(key, value.map { String($0) } ?? "null") }
    mutating func add(_ key: String, _ value: Int) { addRaw(key, String(value)) }
    mutating func add(_ key: String, _ value: Int32) { addRaw(key, String(value)) }
    mutating func add(_ key: String, _ value: Bool) { addRaw(key, value ? "true" : "false") }

    /// A number with `decimals` decimals (non-finite values are written as null).
    mutating func add(_ key: String, _ value: Double, decimals: Int = 3) {
        guard value.isFinite else { return addRaw(key, "null") }
        addRaw(key, DecimalFormat.fixed(value, decimals: decimals))
    }

    private mutating func addRaw(_ key: String, _ raw: String) {
        if !first { text += "," }
        first = false
        text += Self.quote(key) + ":" + raw
    }

    var line: String { text + "}\n" }

    static func quote(_ s: String) -> String { JSONText.quote(s) }
}
