import Synchronization

/// Counters of one download, read by the progress reporter and the result.
final class DownloadCounters: Sendable {
    /// Bytes written to the output in this run (excluding bytes already present on resume).
    let bytesWritten = Atomic<Int64>(0)
    /// Requests currently running.
    let activeTransfers = Atomic<Int>(0)
    /// Bytes known to be done before this run started (resume).
    let bytesAlreadyDone = Atomic<Int64>(0)
    /// Requests sent, probes included.
    let requests = Atomic<Int>(0)
    /// Waits before asking again (counted or not).
    let retries = Atomic<Int>(0)
    /// The size to report once the probe knows it (-1: unknown).
    let knownSize = Atomic<Int64>(-1)
    /// The first request's time to first byte, in nanoseconds (-1: none yet).
    let timeToFirstByteNanos = Atomic<Int64>(-1)
}

/// The probe's sink: keeps the head and, for errors, the start of the body; writes nothing.
///
/// A small body (the one byte of `bytes=0-0`, a redirect's or an error's text) is read to its
/// end, so the connection stays open for the requests that follow; a whole file (a server that
/// ignores Range answers 200) or any body beyond `ErrorBody.maxBytes` ends the transfer.
///
/// With `wholeFileBytes` > 0 the probe asks for that many bytes, and a file no longer than that
/// arrives whole in its reply (`wholeBody`): a small file costs one request. The reply of a
/// larger file is cut off after its head (its ranges come from the range requests).
final class ProbeSink: ResponseSink, @unchecked Sendable {
    /// Set for error statuses (400 and up, but 416, which an empty file answers); redirects
    /// and successes are the probe's to read.
    private(set) var errorStatus: Int?
    private(set) var errorBody = ErrorBody()
    private let wholeFileBytes: Int
    /// The whole file, when the reply holds all of it (complete only if the transfer completed).
    private(set) var wholeBody: [UInt8]?
    /// The length the reply announced for `wholeBody` (nil: until the end of the body).
    private(set) var wholeLength: Int64?
    /// A 200 too long to keep is handed over at its first byte (`TransferStop.handOver`)
    /// instead of cut: the download goes on with it as its one stream (`StreamFetcher`).
    private let handsOver: Bool
    private var handOverAtFirstByte = false

    init(wholeFileBytes: Int = 0, handsOver: Bool = false) {
        self.wholeFileBytes = wholeFileBytes
        self.handsOver = handsOver
    }

    func accept(_ head: ResponseHead) -> TransferStop? {
        if wholeFileBytes > 0, let length = wholeFileLength(head) {
            wholeLength = length < 0 ? nil : length
            wholeBody = []
            wholeBody!.reserveCapacity(length < 0 ? 16 * 1024 : Int(length))
            return nil
        }
        if head.status == 200 {
            // A server without ranges sent the whole file: keep the transfer for the stream,
            // unless it is encoded (a stream must be the file's own bytes; refused later).
            guard handsOver, head["content-encoding"].map({ $0.lowercased() == "identity" }) ?? true else { return .enough }
            handOverAtFirstByte = true
            return nil
        }
        if wholeFileBytes > 0 && head.status == 206 { return .enough }
        if head.status >= 400 && head.status != 416 { errorStatus = head.status }
        return nil
    }

    /// The length of the whole file in this reply, when it fits in `wholeFileBytes`: a 206 of
    /// `0-(n-1)/n`, or a 200 with a small Content-Length (-1: chunked, length unknown).
    private func wholeFileLength(_ head: ResponseHead) -> Int64? {
        if let encoding = head["content-encoding"], encoding.lowercased() != "identity" { return nil }
        switch head.status {
        case 206:
            guard let text = head["content-range"], let range = ContentRange(parsing: text),
                  let total = range.completeLength, let got = range.range,
                  total > 0, total <= Int64(wholeFileBytes), got.start == 0, got.end == total else { return nil }
            return total
        case 200:
            if head["transfer-encoding"] != nil { return -1 }
            guard let text = head["content-length"], let length = ContentRange.parseDecimal(text),
                  length <= Int64(wholeFileBytes) else { return nil }
            return length
        default:
            return nil
        }
    }

    func body(_ bytes: UnsafeRawBufferPointer) -> TransferStop? {
        if handOverAtFirstByte {
            handOverAtFirstByte = false
            return .handOver
        }
        if wholeBody != nil {
            if wholeBody!.count + bytes.count > min(Int(wholeLength ?? Int64(wholeFileBytes)), wholeFileBytes) {
                wholeBody = nil
                return .enough
            }
            wholeBody!.append(contentsOf: bytes)
            return nil
        }
        return errorBody.append(bytes) ? nil : .enough
    }
}

/// Writes one requested byte range in place, after checking the response describes exactly
/// those bytes of the same representation the probe saw.
///
/// Checks before the first byte is written (RELIABILITY A1–A5, A8, A11, A12): status 206; a
/// single part (no multipart/byteranges); identity encoding; `Content-Range` equal to the
/// request and to the probe's length; `Content-Length` consistent; the probe's validator.
/// While writing: never a byte outside the requested range.
final class RangeSink: ResponseSink, @unchecked Sendable {
    /// The bytes of the output file this request fills.
    let requested: ByteRange
    /// Whether the request carries `If-Range` (a 200 with the probe's validator then means the
    /// server judged it weak).
    let sentIfRange: Bool
    /// Output offset 0 is this remote offset (`--range START-END` downloads part of a file).
    let remoteOffset: Int64
    /// The bytes asked of the server.
    var remoteRange: ByteRange { ByteRange(requested.start + remoteOffset, requested.end + remoteOffset) }
    private var output: StagedOutput
    private let remote: RemoteFile
    private let counters: DownloadCounters
    /// The next offset to write: `requested.start ..< position` is accepted (queued or written;
    /// all written after `flush()`).
    private(set) var position: Int64
    /// `position`, readable from other tasks while the transfer runs (for stealing and hedging).
    let publishedPosition: Atomic<Int64>
    /// Where this request stops; lowered when an idle connection steals the far part.
    let limit: Atomic<Int64>
    /// Where the server's reply ends: `requested.end`, or less when the server answered with
    /// the first part of the range only (a 206 whose Content-Range starts where asked and ends
    /// early: servers that cap the bytes per reply). The rest is asked for again; see
    /// `shortenedByServer`. Set by `accept` (loop thread), read after the transfer.
    private(set) var servedEnd: Int64
    /// Set when the reply was an HTTP error status; the body is kept for the message.
    private(set) var errorStatus: Int?
    private(set) var errorBody = ErrorBody()

    init(requested: ByteRange, remoteOffset: Int64 = 0, output: StagedOutput, remote: RemoteFile, counters: DownloadCounters,
         sentIfRange: Bool = false) {
        self.sentIfRange = sentIfRange
        self.requested = requested
        self.remoteOffset = remoteOffset
        self.position = requested.start
        self.publishedPosition = Atomic(requested.start)
        self.limit = Atomic(requested.end)
        self.servedEnd = requested.end
        self.output = output
        self.remote = remote
        self.counters = counters
    }

    func accept(_ head: ResponseHead) -> TransferStop? {
        switch head.status {
        case 206:
            return check206(head)
        case 200:
            if let change = remote.validatorMismatch(in: head) { return .remoteChanged(change) }
            if sentIfRange {
                // The validator matches, so If-Range was judged weak (Apache, for a file
                // modified in the last second): not a server that ignores ranges.
                return .invalid(InvalidReply(.ifRangeIgnored, "the server answered If-Range: \(remote.ifRangeValidator ?? "") with 200 and the whole file (it treats the validator as weak)"))
            }
            return .invalid(InvalidReply(.ignoredRange, "the server ignored the Range header (200 instead of 206 for \(remoteRange.httpRangeValue))"))
        case 416:
            if let length = head["content-range"].flatMap(ContentRange.init(parsing:))?.completeLength,
               length != remote.size {
                return .remoteChanged("its size is now \(length) bytes, was \(remote.size.map(String.init) ?? "unknown")")
            }
            return .invalid(InvalidReply(.unexpectedStatus, "the server refused \(remoteRange.httpRangeValue) (416 Range Not Satisfiable)"))
        default:
            if head.status >= 300 {
                errorStatus = head.status
                return nil  // keep the start of the body for the error message
            }
            return .invalid(InvalidReply(.unexpectedStatus, "unexpected status \(head.status) for a range request"))
        }
    }

    private func check206(_ head: ResponseHead) -> TransferStop? {
        if let encoding = head["content-encoding"], encoding.lowercased() != "identity" {
            return .invalid(InvalidReply(.encoded, "the server sent a byte range with Content-Encoding: \(encoding); ranges must be of the identity encoding"))
        }
        if let type = head["content-type"], type.lowercased().hasPrefix("multipart/byteranges") {
            return .invalid(InvalidReply(.multipart, "the server sent multipart/byteranges for a single range"))
        }
        guard let text = head["content-range"] else {
            return .invalid(InvalidReply(.wrongRange, "206 reply without Content-Range"))
        }
        guard let contentRange = ContentRange(parsing: text), let got = contentRange.range else {
            return .invalid(InvalidReply(.wrongRange, "malformed Content-Range: \(text.prefix(100))"))
        }
        if let length = contentRange.completeLength, let size = remote.size, length != size {
            return .remoteChanged("its size is now \(length) bytes, was \(size)")
        }
        // The first part of the range is a usable answer (the rest is asked for again);
        // anything else is not the bytes asked for.
        guard got.start == remoteRange.start, got.end <= remoteRange.end, got.count > 0 else {
            return .invalid(InvalidReply(.wrongRange, "asked for \(remoteRange.httpRangeValue), the server sent bytes \(got.start)-\(got.end - 1)"))
        }
        servedEnd = got.end - remoteOffset
        if let lengthText = head["content-length"] {
            guard let length = ContentRange.parseDecimal(lengthText), length == servedEnd - requested.start else {
                return .invalid(InvalidReply(.wrongLength, "Content-Length \(lengthText.prefix(30)) does not match Content-Range \(text.prefix(60))"))
            }
        }
        if let change = remote.validatorMismatch(in: head) { return .remoteChanged(change) }
        return nil
    }

    @inline(__always)
    func body(_ bytes: UnsafeRawBufferPointer) -> TransferStop? {
        if errorStatus != nil {
            return errorBody.append(bytes) ? nil : .enough
        }
        if position + Int64(bytes.count) > servedEnd {
            return .invalid(InvalidReply(.tooManyBytes, "the server sent more bytes than the \(servedEnd - requested.start) its Content-Range announced for \(remoteRange.httpRangeValue)"))
        }
        // Stop at the limit (another request took the rest); never write past it.
        let stopAt = limit.load(ordering: .relaxed)
        let n = Int(max(0, min(Int64(bytes.count), stopAt - position)))
        if n > 0 {
            if let error = output.write(UnsafeRawBufferPointer(rebasing: bytes[0..<n]), at: position) {
                return .localFailure(error)
            }
            position += Int64(n)
            publishedPosition.store(position, ordering: .relaxed)
            counters.bytesWritten.add(Int64(n), ordering: .relaxed)
        }
        // Stopped before the reply's own end: cut the transfer (a reply that reaches its end
        // completes, and its connection stays open).
        if position >= stopAt && stopAt < servedEnd { return .enough }
        return nil
    }

    /// After the transfer: waits until every accepted byte is written; returns a write error.
    /// `requested.start ..< position` is then in the file.
    func flush() async -> SpateError? {
        await output.flush()
    }

    /// The bytes written so far from the start, with their CRC-32 (nil when none are).
    /// Safe from any thread; after `flush()` it covers everything accepted.
    var written: HashedRange? {
        output.group.hashedRange(from: requested.start)
    }

    /// Whether the server answered with the first part of the range only, and all of that
    /// part came (after the transfer): the request ends well, its rest is pending again.
    var shortenedByServer: Bool { servedEnd < requested.end && position == servedEnd }

    /// How the transfer ended (after it returned): a reply that ended without an error before
    /// its last byte is a short reply (unless the server announced it: `shortenedByServer`).
    func end(of outcome: TransferOutcome, url: RemoteURL, wallSeconds: Int64) -> TransferEnd {
        let end = outcome.end(errorStatus: errorStatus, errorBody: errorBody, url: url, wallSeconds: wallSeconds)
        if end == .completed && position < requested.end && !shortenedByServer {
            return .invalidReply(InvalidReply(.shortReply, "the reply for \(remoteRange.httpRangeValue) ended after \(position - requested.start) of \(requested.count) bytes"))
        }
        return end
    }
}

/// Writes a whole-file reply (status 200) from offset 0, for servers without range support.
final class StreamSink: ResponseSink, @unchecked Sendable {
    private var output: StagedOutput
    private let remote: RemoteFile
    private let counters: DownloadCounters
    /// Bytes written so far, from offset 0.
    private(set) var position: Int64 = 0
    private(set) var errorStatus: Int?
    private(set) var errorBody = ErrorBody()
    /// The length the server announced, if any.
    private(set) var announcedLength: Int64?

    init(output: StagedOutput, remote: RemoteFile, counters: DownloadCounters) {
        self.output = output
        self.remote = remote
        self.counters = counters
    }

    func accept(_ head: ResponseHead) -> TransferStop? {
        guard head.status == 200 else {
            if head.status >= 300 {
                errorStatus = head.status
                return nil
            }
            return .invalid(InvalidReply(.unexpectedStatus, "unexpected status \(head.status) for a whole-file request"))
        }
        if let encoding = head["content-encoding"], encoding.lowercased() != "identity" {
            return .invalid(InvalidReply(.encoded, "the server sent Content-Encoding: \(encoding) despite Accept-Encoding: identity"))
        }
        if let change = remote.validatorMismatch(in: head) { return .remoteChanged(change) }
        if let text = head["content-length"], head["transfer-encoding"] == nil {
            guard let length = ContentRange.parseDecimal(text) else {
                return .invalid(InvalidReply(.wrongLength, "malformed Content-Length: \(text.prefix(30))"))
            }
            if let size = remote.size, size != length {
                return .remoteChanged("its size is now \(length) bytes, was \(size)")
            }
            announcedLength = length
        }
        return nil
    }

    @inline(__always)
    func body(_ bytes: UnsafeRawBufferPointer) -> TransferStop? {
        if errorStatus != nil {
            return errorBody.append(bytes) ? nil : .enough
        }
        if let limit = announcedLength ?? remote.size, position + Int64(bytes.count) > limit {
            return .invalid(InvalidReply(.tooManyBytes, "the server sent more than the announced \(limit) bytes"))
        }
        if let error = output.write(bytes, at: position) {
            return .localFailure(error)
        }
        position += Int64(bytes.count)
        counters.bytesWritten.add(Int64(bytes.count), ordering: .relaxed)
        return nil
    }

    /// After the transfer: waits until every accepted byte is written; returns a write error.
    func flush() async -> SpateError? {
        await output.flush()
    }

    /// How the transfer ended (after it returned): one that stopped short of the announced
    /// length is a short reply.
    func end(of outcome: TransferOutcome, url: RemoteURL, wallSeconds: Int64) -> TransferEnd {
        let end = outcome.end(errorStatus: errorStatus, errorBody: errorBody, url: url, wallSeconds: wallSeconds)
        if end == .completed, let expected = announcedLength ?? remote.size, position != expected {
            return .invalidReply(InvalidReply(.shortReply, "the reply ended after \(position) of \(expected) bytes"))
        }
        return end
    }
}
