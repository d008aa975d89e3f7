import Glibc
import Spate

/// `spate bench --chart FILE.svg`: throughput against connections, one line per request size,
/// as plain SVG text (no drawing library: a few lines, points, axes and labels).
enum BenchChart {
    static let width = 720.0
    static let height = 420.0
    static let left = 80.0, right = 190.0, top = 50.0, bottom = 60.0
    static let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]

    static func svg(rows: [BenchCommand.Row], title: String) -> String {
        let counts = Array(Set(rows.compactMap(\.setting.connections))).sorted()
        let sizes = rows.map(\.setting.chunkBytes).reduce(into: [Int64?]()) { if !$0.contains($1) { $0.append($1) } }
        let peak = max(1, rows.map(\.bytesPerSecond).max() ?? 1) / 1_048_576
        let yMax = niceCeiling(peak)
        let plotWidth = width - left - right, plotHeight = height - top - bottom
        // Connections on a log2 axis: 1, 2, 4, … evenly spaced.
        let logs = counts.map { log2(Double($0)) }
        let (lo, hi) = (logs.min() ?? 0, max((logs.max() ?? 1), (logs.min() ?? 0) + 1))
        func x(_ n: Int) -> Double { left + (log2(Double(n)) - lo) / (hi - lo) * plotWidth }
        func y(_ mibPerSecond: Double) -> Double { top + plotHeight - mibPerSecond / yMax * plotHeight }

        var out = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(Int(width / 2))" y="24" text-anchor="middle" font-size="15">\(escape(title))</text>

            """
        // Axes, grid and labels.
        for step in 0...5 {
            let value = yMax * Double(step) / 5
            let py = fmt(y(value))
            out += "<line x1=\"\(fmt(left))\" y1=\"\(py)\" x2=\"\(fmt(left + plotWidth))\" y2=\"\(py)\" stroke=\"#ddd\"/>\n"
            out += "<text x=\"\(fmt(left - 8))\" y=\"\(py)\" text-anchor=\"end\" dominant-baseline=\"middle\">\(Int(value.rounded()))</text>\n"
        }
        for n in counts {
            out += "<text x=\"\(fmt(x(n)))\" y=\"\(fmt(top + plotHeight + 18))\" text-anchor=\"middle\">\(n)</text>\n"
        }
        out += "<line x1=\"\(fmt(left))\" y1=\"\(fmt(top + plotHeight))\" x2=\"\(fmt(left + plotWidth))\" y2=\"\(fmt(top + plotHeight))\" stroke=\"black\"/>\n"
        out += "<line x1=\"\(fmt(left))\" y1=\"\(fmt(top))\" x2=\"\(fmt(left))\" y2=\"\(fmt(top + plotHeight))\" stroke=\"black\"/>\n"
        out += "<text x=\"\(fmt(left + plotWidth / 2))\" y=\"\(fmt(height - 16))\" text-anchor=\"middle\">connections</text>\n"
        out += "<text x=\"20\" y=\"\(fmt(top + plotHeight / 2))\" text-anchor=\"middle\" transform=\"rotate(-90 20 \(fmt(top + plotHeight / 2)))\">MiB/s (median)</text>\n"
        // One line per request size.
        for (index, size) in sizes.enumerated() {
            let color = colors[index % colors.count]
            let points = rows.filter { $0.setting.chunkBytes == size }.sorted { $0.setting.connections! < $1.setting.connections! }
                .map { (x($0.setting.connections!), y($0.bytesPerSecond / 1_048_576)) }
            out += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"\(points.map { "\(fmt($0.0)),\(fmt($0.1))" }.joined(separator: " "))\"/>\n"
            for (px, py) in points {
                out += "<circle cx=\"\(fmt(px))\" cy=\"\(fmt(py))\" r=\"3.5\" fill=\"\(color)\"/>\n"
            }
            let label = size.map { "requests of \(ByteSize.format($0))" } ?? "automatic requests"
            let ly = top + 10 + Double(index) * 20
            out += "<rect x=\"\(fmt(width - right + 16))\" y=\"\(fmt(ly - 6))\" width=\"12\" height=\"12\" fill=\"\(color)\"/>\n"
            out += "<text x=\"\(fmt(width - right + 34))\" y=\"\(fmt(ly))\" dominant-baseline=\"middle\">\(escape(label))</text>\n"
        }
        return out + "</svg>\n"
    }

    /// 1, 2, 5 × 10^k at or above `value`.
    static func niceCeiling(_ value: Double) -> Double {
        var scale = 1.0
        while scale * 10 <= value { scale *= 10 }
        for m in [1.0, 2.0, 5.0, 10.0] where m * scale >= value { return m * scale }
        return 10 * scale
    }

    static func fmt(_ v: Double) -> String { DecimalFormat.fixed(v, decimals: 1) }

    static func escape(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default: out.append(c)
            }
        }
        return out
    }

    private static func log2(_ v: Double) -> Double { Glibc.log2(v) }
}
