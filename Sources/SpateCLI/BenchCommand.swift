import Glibc
import Spate

/// `spate bench URL [--connections 1,2,4,...] [--chunk-sizes auto,1M,...] [--repeat N] [--json]
/// [--chart FILE.svg] [download options]`: downloads the URL again and again into nothing
/// (the discard path), over a sweep of connection counts and request sizes, and reports per
/// setting the median throughput, the time to first byte, the CPU seconds per GiB and the
/// retries; then which setting was best and how spate's default (self-tuning) compares.
///
/// Every download option that makes sense without a file applies (headers, tokens, TLS,
/// retries, `--max-rate`): the rest of the line is parsed as a download's.
struct BenchCommand {
    struct Setting: Hashable {
        /// Nil: spate's default (self-tuning up to `-c`).
        var connections: Int?
        /// Nil: automatic request sizes.
        var chunkBytes: Int64?
    }

    struct Row {
        var setting: Setting
        var bytesPerSecond: Double
        var timeToFirstByte: Double?
        var cpuSecondsPerGiB: Double
        var retries: Int
        var runs: Int
    }

    var connections: [Int] = [1, 2, 4, 8, 16, 32, 64]
    var chunkSizes: [Int64?] = [nil]
    var repeats = 3
    var json = false
    var chart: String?
    var command: SpateCommand

    static let help = """
        USAGE: spate bench URL [--connections LIST] [--chunk-sizes LIST] [--repeat N] [--json] [--chart FILE.svg] [download options]

        Downloads URL repeatedly into nothing (no file is written) and reports, per setting,
        the median throughput, time to first byte, CPU seconds per GiB and retries; then the
        best setting and how the default (self-tuning) compares.

          --connections LIST   connection counts to sweep (default 1,2,4,8,16,32,64)
          --chunk-sizes LIST   request sizes to sweep, 'auto' for spate's choice (default auto)
          --repeat N           runs per setting; the median is reported (default 3)
          --json               print the results as a JSON array on standard output
          --chart FILE.svg     draw throughput against connections as an SVG chart

        Headers, tokens, TLS and retry options are those of a download (spate --help).
        """

    /// Splits the bench's own options from a download's.
    static func parse(_ arguments: [String]) throws(SpateError) -> BenchCommand {
        var rest: [String] = []
        var connections: [Int]?
        var chunkSizes: [Int64?]?
        var repeats = 3
        var json = false
        var chart: String?
        var i = 0
        func value(_ name: String) throws(SpateError) -> String {
            let arg = arguments[i]
            if let eq = arg.firstIndex(of: "="), arg.hasPrefix("--") { return String(arg[arg.index(after: eq)...]) }
            i += 1
            guard i < arguments.count else { throw SpateError(.usage, "\(name) needs a value") }
            return arguments[i]
        }
        while i < arguments.count {
            let arg = arguments[i]
            let name = arg.split(separator: "=", maxSplits: 1).first.map(String.init) ?? arg
            switch name {
            case "--connections":
                let text = try value(name)
                let list = text.split(separator: ",").map { Int($0.filter { $0 != " " }) }
                guard !list.isEmpty, list.allSatisfy({ $0.map { (1...DownloadOptions.maximumConnections).contains($0) } ?? false }) else {
                    throw SpateError(.usage, "invalid --connections \"\(text)\": a list of counts from 1 to \(DownloadOptions.maximumConnections), like 1,4,16")
                }
                connections = list.map { $0! }
            case "--chunk-sizes":
                let text = try value(name)
                var list: [Int64?] = []
                for item in text.split(separator: ",") {
                    let item = String(item.filter { $0 != " " })
                    if item.lowercased() == "auto" { list.append(nil); continue }
                    guard let bytes = ByteSize.parse(item), bytes >= DownloadOptions.minimumChunkBytes else {
                        throw SpateError(.usage, "invalid --chunk-sizes \"\(text)\": sizes from 4K, or auto, like auto,1M,8M")
                    }
                    list.append(bytes)
                }
                guard !list.isEmpty else { throw SpateError(.usage, "--chunk-sizes needs at least one size") }
                chunkSizes = list
            case "--repeat":
                let text = try value(name)
                guard let n = Int(text), (1...100).contains(n) else { throw SpateError(.usage, "--repeat must be between 1 and 100") }
                repeats = n
            case "--json":
                json = true
            case "--chart":
                chart = try value(name)
            case "-o", "--output", "-i", "--input-file", "-d", "--dir", "--discard", "--window", "--events", "-J", "--remote-header-name",
                 "--range", "--checksum":
                throw SpateError(.usage, "\(name) is not a bench option: bench downloads into nothing")
            default:
                rest.append(arg)
            }
            i += 1
        }
        let command: SpateCommand
        do {
            command = try SpateCommand.parse(rest)
        } catch {
            throw SpateError(.usage, SpateCommand.message(for: error))
        }
        guard command.urls.count == 1 else { throw SpateError(.usage, "bench takes one URL") }
        var bench = BenchCommand(command: command)
        if let connections { bench.connections = connections }
        if let chunkSizes { bench.chunkSizes = chunkSizes }
        bench.repeats = repeats
        bench.json = json
        bench.chart = chart
        return bench
    }

    /// `spate bench ...`: parses, runs, maps a failure to one line and its exit code.
    static func main(_ arguments: [String]) async -> Int32 {
        if arguments.contains("--help") || arguments.contains("-h") || arguments.isEmpty {
            print(help)
            return arguments.isEmpty ? SpateError.Kind.usage.exitCode : 0
        }
        do {
            let bench = try parse(arguments)
            return try await Interruptible.run { () async throws(SpateError) -> Int32 in try await bench.run() }
        } catch {
            Console.error(error.message)
            return error.kind.exitCode
        }
    }

    /// Runs the sweep; returns the exit code.
    func run() async throws(SpateError) -> Int32 {
        // Before the sweep, not after minutes of it.
        if let chart, !FilePaths.directoryIsWritable(for: chart) {
            throw SpateError(.localIO, "cannot write the chart: \(FilePaths.directory(of: chart)) is missing or not writable")
        }
        var base = try command.downloadOptions()
        let recorder = command.trace.map { _ in TraceRecorder() }
        base.trace = recorder
        defer {
            if let recorder, let path = command.trace {
                do { try recorder.write(to: path) } catch { Console.error(error.message) }
            }
        }
        let url = command.urls[0]
        var rows: [Row] = []
        var settings = chunkSizes.flatMap { size in connections.map { Setting(connections: $0, chunkBytes: size) } }
        settings.append(Setting(connections: nil, chunkBytes: nil))
        for setting in settings {
            var options = base
            options.output = .discard
            options.journal = false
            if let n = setting.connections {
                options.connections = n
                options.selfTuning = false
            }
            options.chunkBytes = setting.chunkBytes ?? base.chunkBytes
            var samples: [(rate: Double, ttfb: Double?, cpu: Double, retries: Int)] = []
            for _ in 0..<repeats {
                let before = Self.cpuSeconds()
                let download = try Download(url: url, to: "/dev/null", options: options)
                let result = try await DownloadJob.run(download, quiet: true)
                let cpu = Self.cpuSeconds() - before
                guard result.bytes > 0 else {
                    throw SpateError(.usage, "\(Redactor.url(url)) is empty: there is nothing to measure")
                }
                let gib = Double(max(1, result.bytes)) / Double(1 << 30)
                samples.append((result.bytesPerSecond, result.timeToFirstByte?.secondsDouble, cpu / gib, result.retries))
            }
            let row = Row(setting: setting, bytesPerSecond: Self.median(samples.map(\.rate)),
                          timeToFirstByte: samples.compactMap(\.ttfb).isEmpty ? nil : Self.median(samples.compactMap(\.ttfb)),
                          cpuSecondsPerGiB: Self.median(samples.map(\.cpu)), retries: samples.map(\.retries).reduce(0, +),
                          runs: repeats)
            rows.append(row)
            Console.note(Self.line(row))
        }
        let swept = rows.filter { $0.setting.connections != nil }
        let best = swept.max { $0.bytesPerSecond < $1.bytesPerSecond }!
        let automatic = rows.last!
        let share = best.bytesPerSecond > 0 ? " (\(Int((automatic.bytesPerSecond / best.bytesPerSecond * 100).rounded())) % of it)" : ""
        Console.note("best: \(Self.name(best.setting)) at \(ByteSize.formatRate(best.bytesPerSecond)); the default (self-tuning up to \(base.connections)) reached \(ByteSize.formatRate(automatic.bytesPerSecond))\(share)")
        if json { print(Self.json(rows)) }
        if let chart {
            let svg = BenchChart.svg(rows: swept, title: "spate bench: \(Redactor.originOnly(url))")
            try TextFile.write([svg], to: chart)
            Console.note("chart: \(chart)")
        }
        return 0
    }

    static func name(_ s: Setting) -> String {
        let chunk = s.chunkBytes.map { ByteSize.format($0) } ?? "automatic"
        guard let n = s.connections else { return "default (self-tuning), \(chunk) requests" }
        return "\(n) connection\(n == 1 ? "" : "s"), \(chunk) requests"
    }

    static func line(_ r: Row) -> String {
        var text = "\(name(r.setting)): \(ByteSize.formatRate(r.bytesPerSecond))"
        if let ttfb = r.timeToFirstByte { text += ", first byte \(DecimalFormat.fixed(ttfb * 1000, decimals: 1)) ms" }
        text += ", \(DecimalFormat.fixed(r.cpuSecondsPerGiB, decimals: 2)) CPU-s/GiB"
        if r.retries > 0 { text += ", \(r.retries) retries" }
        return text + " (median of \(r.runs))"
    }

    static func json(_ rows: [Row]) -> String {
        let objects = rows.map { r -> String in
            var line = JSONLine()
            line.add("connections", r.setting.connections.map(Int64.init))
            line.add("chunk_bytes", r.setting.chunkBytes)
            line.add("default", r.setting.connections == nil)
            line.add("bytes_per_second", r.bytesPerSecond, decimals: 0)
            line.add("ttfb_seconds", r.timeToFirstByte ?? .nan, decimals: 6)
            line.add("cpu_seconds_per_gib", r.cpuSecondsPerGiB, decimals: 3)
            line.add("retries", r.retries)
            line.add("runs", r.runs)
            return "  " + String(line.line.dropLast())
        }
        return "[\n" + objects.joined(separator: ",\n") + "\n]"
    }

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return 0 }
        return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    /// This process's user + system CPU seconds so far.
    static func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
            + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
    }
}
