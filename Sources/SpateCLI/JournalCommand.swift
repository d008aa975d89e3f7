import ArgumentParser
import Glibc
import Spate

/// `spate journal show FILE [--json]`: the state of an interrupted download.
struct JournalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spate journal",
        abstract: "Inspect resume journals.",
        subcommands: [Show.self])

    /// Runs `spate journal ARGS` and exits: bad arguments are one `spate: error:` line and
    /// exit 2, like the main command's (ArgumentParser's own `main` prints a usage block and
    /// exits 64); a journal that cannot be read exits with its documented code.
    static func run(_ arguments: [String]) -> Never {
        do {
            var command = try parseAsRoot(arguments)
            try command.run()
            Glibc.exit(0)
        } catch let code as ExitCode {
            Glibc.exit(code.rawValue)  // `Show.run` said why
        } catch {
            if exitCode(for: error) == .success {
                print(fullMessage(for: error))
                Glibc.exit(0)
            }
            Console.error(CommandLineErrors.oneLine(message(for: error), help: "spate journal show --help"))
            Glibc.exit(SpateError.Kind.usage.exitCode)
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the state of a partial download, readable or as JSON.",
            discussion: "FILE is the output path, its .part file, or the .part.journal file itself.")

        @Argument(help: "The download's output path (or its .part or .part.journal).")
        var file: String

        @Flag(help: "Print JSON instead of text.")
        var json = false

        @Option(help: "Most ranges listed in the text output.")
        var limit: Int = 10

        func run() throws {
            let report: JournalReport
            do { report = try JournalReport.read(file) } catch {
                Console.error(error.message)
                throw ExitCode(error.kind.exitCode)
            }
            print(json ? JournalRendering.json(report) : JournalRendering.text(report, limit: limit))
        }
    }
}

/// Text and JSON renderings of a journal report.
enum JournalRendering {
    static func text(_ r: JournalReport, limit: Int) -> String {
        let percent = r.totalBytes > 0 ? Double(r.doneBytes) * 100 / Double(r.totalBytes) : 100
        var lines = [
            "journal    \(r.journalPath) (\(ByteSize.format(r.journalBytes)), \(r.contents.frames) frame\(r.contents.frames == 1 ? "" : "s"))",
            "data       \(r.partPath)\(r.partExists ? "" : " (missing)")",
            "size       \(ByteSize.format(r.totalBytes)) (\(r.totalBytes) bytes)",
            "validator  \(r.contents.header.validator)",
            "request    sha256:\(Hex.encode(r.contents.header.fingerprint)) (scheme, host, port and path)",
            "done       \(ByteSize.format(r.doneBytes)) (\(DecimalFormat.fixed(percent, decimals: 1)) %) in \(r.done.ranges.count) range\(r.done.ranges.count == 1 ? "" : "s"), recorded as \(r.records.count) piece\(r.records.count == 1 ? "" : "s"):",
        ]
        for record in r.records.prefix(limit) {
            lines.append("           \(record.range.start)-\(record.range.end - 1) crc32 \(hex32(record.crc))")
        }
        if r.records.count > limit { lines.append("           … \(r.records.count - limit) more pieces") }
        let missing = r.missing
        lines.append("missing    \(ByteSize.format(missing.reduce(0) { $0 + $1.count })) in \(missing.count) range\(missing.count == 1 ? "" : "s")")
        for range in missing.prefix(limit) { lines.append("           \(range.start)-\(range.end - 1)") }
        if missing.count > limit { lines.append("           … \(missing.count - limit) more") }
        if r.contents.droppedBytes > 0 {
            lines.append("dropped    \(r.contents.droppedBytes) bytes after the last intact frame (\(r.contents.dropReason ?? "damaged"))")
        }
        return lines.joined(separator: "\n")
    }

    static func json(_ r: JournalReport) -> String {
        let (kind, value): (String, String?) = switch r.contents.header.validator {
        case .none: ("none", nil)
        case .strongETag(let e): ("etag", e)
        case .lastModified(let d): ("last-modified", d)
        }
        var fields: [String] = []
        fields.append("\"journal\": \(JSONLine.quote(r.journalPath))")
        fields.append("\"partFile\": \(JSONLine.quote(r.partPath))")
        fields.append("\"partFileExists\": \(r.partExists)")
        fields.append("\"journalBytes\": \(r.journalBytes)")
        fields.append("\"frames\": \(r.contents.frames)")
        fields.append("\"totalBytes\": \(r.totalBytes)")
        fields.append("\"validator\": {\"kind\": \(JSONLine.quote(kind)), \"value\": \(value.map(JSONLine.quote) ?? "null")}")
        fields.append("\"requestFingerprint\": \(JSONLine.quote("sha256:" + Hex.encode(r.contents.header.fingerprint)))")
        fields.append("\"doneBytes\": \(r.doneBytes)")
        let ranges = r.records.map { "{\"start\": \($0.range.start), \"end\": \($0.range.end), \"crc32\": \(JSONLine.quote(hex32($0.crc)))}" }
        fields.append("\"ranges\": [\(ranges.joined(separator: ", "))]")
        let missing = r.missing.map { "{\"start\": \($0.start), \"end\": \($0.end)}" }
        fields.append("\"missing\": [\(missing.joined(separator: ", "))]")
        fields.append("\"droppedBytes\": \(r.contents.droppedBytes)")
        fields.append("\"dropReason\": \(r.contents.dropReason.map(JSONLine.quote) ?? "null")")
        return "{\n  " + fields.joined(separator: ",\n  ") + "\n}"
    }

    static func hex32(_ v: UInt32) -> String {
        let h = String(v, radix: 16)
        return String(repeating: "0", count: 8 - h.count) + h
    }
}
