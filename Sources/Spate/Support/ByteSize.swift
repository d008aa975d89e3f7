/// Byte counts as people write and read them: `512K`, `4MiB`, `1G` in, `1.50 GiB` out.
/// Units are binary (K = 1024), with or without the `iB`/`B` suffix.
public enum ByteSize {
    /// The largest size or offset spate accepts from a server or the command line: 1 EiB.
    /// Larger than any file a file system here holds (ext4 16 TiB, XFS 8 EiB in theory) and far
    /// enough from `Int64.max` that a sum or product of two checked values cannot overflow.
    public static let largest: Int64 = 1 << 60

    /// Parses a non-negative size up to `largest`; nil for anything else.
    public static func parse(_ text: String) -> Int64? {
        var digits = text.trimmingSpaces().uppercased()
        var multiplier: Int64 = 1
        let units: [(String, Int64)] = [
            ("KIB", 1 << 10), ("MIB", 1 << 20), ("GIB", 1 << 30), ("TIB", 1 << 40),
            ("KB", 1 << 10), ("MB", 1 << 20), ("GB", 1 << 30), ("TB", 1 << 40),
            ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("T", 1 << 40), ("B", 1),
        ]
        for (suffix, m) in units where digits.hasSuffix(suffix) {
            digits.removeLast(suffix.count)
            multiplier = m
            break
        }
        guard let n = ContentRange.parseDecimal(digits.trimmingSpaces()) else { return nil }
        let (product, overflow) = n.multipliedReportingOverflow(by: multiplier)
        return overflow || product > largest ? nil : product
    }

    /// `1023 B`, `1.00 KiB`, `12.3 MiB`, `1.50 GiB`: three significant digits.
    public static func format(_ bytes: Int64) -> String {
        if bytes < 1024 { return "\(bytes) B" }
        return format(Double(bytes), suffix: "")
    }

    /// A rate: `612 MiB/s`.
    public static func formatRate(_ bytesPerSecond: Double) -> String {
        if bytesPerSecond < 1024 { return "\(Int(bytesPerSecond)) B/s" }
        return format(bytesPerSecond, suffix: "/s")
    }

    private static func format(_ value: Double, suffix: String) -> String {
        let units = ["KiB", "MiB", "GiB", "TiB", "PiB"]
        var v = value / 1024
        var i = 0
        while v >= 1024 && i < units.count - 1 {
            v /= 1024
            i += 1
        }
        return "\(DecimalFormat.significant3(v)) \(units[i])\(suffix)"
    }
}

/// Formats non-negative numbers without Foundation.
public enum DecimalFormat {
    /// Three significant digits: `1.23`, `12.3`, `123`.
    public static func significant3(_ v: Double) -> String {
        if v >= 100 { return String(Int(v.rounded())) }
        let decimals = v >= 10 ? 1 : 2
        return fixed(v, decimals: decimals)
    }

    /// `v` with exactly `decimals` digits after the point.
    public static func fixed(_ v: Double, decimals: Int) -> String {
        var scale = 1.0
        for _ in 0..<decimals { scale *= 10 }
        let scaled = Int64((v * scale).rounded())
        let whole = scaled / Int64(scale)
        var fraction = String(scaled % Int64(scale))
        while fraction.count < decimals { fraction = "0" + fraction }
        return decimals == 0 ? String(whole) : "\(whole).\(fraction)"
    }
}
