/// The server side of a `Range` header (RFC 9110 §14.1.2), single ranges only.
public enum RangeRequest: Equatable, Sendable {
    /// Serve `start ..< end`.
    case satisfiable(start: Int64, end: Int64)
    /// 416 with `Content-Range: bytes */size`.
    case unsatisfiable
    /// Serve the whole representation with 200 (absent, malformed or multi-range header).
    case ignore

    /// Interprets `bytes=a-b`, `bytes=a-` and `bytes=-n` against a representation of `size` bytes.
    public static func parse(_ header: String?, size: Int64) -> RangeRequest {
        guard let header else { return .ignore }
        let value = header.trimmingCharacters(in: " \t")
        guard value.lowercased().hasPrefix("bytes=") else { return .ignore }
        let spec = value.dropFirst(6).trimmingCharacters(in: " \t")
        if spec.contains(",") { return .ignore }
        let parts = spec.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { return .ignore }
        let first = parts[0].trimmingCharacters(in: " "), last = parts[1].trimmingCharacters(in: " ")
        if first.isEmpty {
            guard let n = Int64(last), n >= 0 else { return .ignore }
            if n == 0 || size == 0 { return .unsatisfiable }
            return .satisfiable(start: max(0, size - n), end: size)
        }
        guard let a = Int64(first), a >= 0 else { return .ignore }
        var b = size - 1
        if !last.isEmpty {
            guard let parsed = Int64(last), parsed >= a else { return .ignore }
            b = min(parsed, size - 1)
        }
        if a >= size { return .unsatisfiable }
        return .satisfiable(start: a, end: b + 1)
    }
}

extension StringProtocol {
    func trimmingCharacters(in set: String) -> String {
        let chars = Set(set)
        guard let first = firstIndex(where: { !chars.contains($0) }) else { return "" }
        let last = lastIndex(where: { !chars.contains($0) })!
        return String(self[first...last])
    }
}
