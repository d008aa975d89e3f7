import CCurl

/// Parses `Retry-After` (RFC 9110 §10.2.3): delta-seconds or an HTTP-date.
enum RetryAfter {
    /// - Parameter now: the current time in seconds since the epoch (for HTTP-dates).
    static func parse(_ value: String?, now: Int64) -> Duration? {
        guard let value = value?.trimmingSpaces(), !value.isEmpty else { return nil }
        if let seconds = ContentRange.parseDecimal(value) {
            return .seconds(min(seconds, 86_400 * 365))
        }
        // libcurl's date parser understands the three HTTP date formats.
        let when = Int64(curl_getdate(value, nil))
        guard when > 0 else { return nil }
        return .seconds(max(0, when - now))
    }
}
