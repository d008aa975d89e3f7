/// What the reply to a probe says: a redirect to follow, the file (and its bytes, when the
/// reply held every one), or a failure for `FailurePolicy` to judge.
///
/// One reading for both probes: the engine's (`RemoteResolver`) and a batch's small-file
/// fetch (`SmallFileFetch`), so a small file and a big one follow the same rules.
enum ProbeReply {
    case redirect(RemoteURL)
    case file(RemoteFile, body: [UInt8]?)
    case failed(TransferEnd)

    /// Reads one probe's reply. `redirects` counts the redirects followed so far (one more when
    /// this is one). Throws for a reply that asking again cannot mend (a redirect without a
    /// Location, too many redirects, a bad Content-Range, 416 for the first byte).
    ///
    /// - Parameter serverDigests: read the whole-file digests the reply publishes
    ///   (`ServerDigests`).
    static func read(_ outcome: TransferOutcome, sink: ProbeSink, target: RemoteURL, redirects: inout Int,
                     serverDigests: Bool, wallSeconds: Int64) throws(SpateError) -> ProbeReply {
        let end = outcome.end(errorStatus: sink.errorStatus, errorBody: sink.errorBody, url: target, wallSeconds: wallSeconds)
        guard let head = outcome.head, end == .enough || end == .completed else { return .failed(end) }
        func file(size: Int64?, acceptsRanges: Bool, wholeBody: Bool) -> RemoteFile {
            var file = RemoteFile(url: target, size: size, acceptsRanges: acceptsRanges,
                                  strongETag: RemoteFile.strongETag(from: head["etag"]),
                                  lastModified: head["last-modified"], contentDisposition: head["content-disposition"])
            if serverDigests {
                let found = ServerDigests.parse(head, wholeBody: wholeBody)
                file.serverDigests = found.digests
                file.digestNotices = found.notices
            }
            return file
        }
        switch head.status {
        case 301, 302, 303, 307, 308:
            guard let location = head["location"] else {
                throw SpateError.invalidResponse("redirect \(head.status) without a Location header from \(target.redacted)")
            }
            redirects += 1
            let next = try target.resolving(location)
            if redirects > RemoteResolver.maxRedirects {
                // The origin of the resolved target (a relative Location has none of its own).
                throw SpateError.invalidResponse("too many redirects (more than \(RemoteResolver.maxRedirects)), last to \(Redactor.originOnly(next.string))")
            }
            return .redirect(next)
        case 206:
            guard let text = head["content-range"], let contentRange = ContentRange(parsing: text),
                  let range = contentRange.range, range.start == 0 else {
                throw SpateError.invalidResponse("the probe's 206 reply has a bad Content-Range: \(head["content-range"]?.prefix(80) ?? "none")")
            }
            let rangesUsable = head["accept-ranges"]?.lowercased() != "none" && contentRange.completeLength != nil
            // A 206 that holds every byte (a small file, `wholeFileBytes`) carries the whole
            // file too: its Content-MD5 is the file's.
            let holdsAll = contentRange.completeLength.map { range.end == $0 } ?? false
            return .file(file(size: contentRange.completeLength, acceptsRanges: rangesUsable, wholeBody: holdsAll),
                         body: whole(sink, end: end, size: contentRange.completeLength))
        case 200:
            var size: Int64?
            if head["transfer-encoding"] == nil, let text = head["content-length"] {
                size = ContentRange.parseDecimal(text)
            }
            let body = whole(sink, end: end, size: size)
            return .file(file(size: size ?? body.map { Int64($0.count) }, acceptsRanges: false, wholeBody: true), body: body)
        case 416:
            if let contentRange = head["content-range"].flatMap(ContentRange.init(parsing:)),
               contentRange.range == nil, contentRange.completeLength == 0 {
                return .file(file(size: 0, acceptsRanges: true, wholeBody: false), body: nil)
            }
            throw SpateError(.http, "the server refused bytes=0-0 (416) for \(target.redacted)", httpStatus: 416)
        default:
            // 202 "accepted, not ready yet" (Box while a new upload is processed): wait, ask
            // again. Other statuses below 300 are replies a probe cannot use; 3xx without a
            // redirect (300, 304) are the server's answer.
            let message = head.status == 202
                ? "the file at \(target.redacted) is not ready yet (202 Accepted)"
                : "unexpected status \(head.status) from \(target.redacted)"
            return .failed(head.status == 202 || head.status >= 300
                ? .status(StatusReply(status: head.status, retryAfter: RetryAfter.parse(head["retry-after"], now: wallSeconds),
                                      message: message))
                : .invalidReply(InvalidReply(.unexpectedStatus, message)))
        }
    }

    /// The probe's body when it is the whole file: the transfer completed and holds every byte.
    private static func whole(_ sink: ProbeSink, end: TransferEnd, size: Int64?) -> [UInt8]? {
        guard end == .completed, let body = sink.wholeBody else { return nil }
        if let size, Int64(body.count) != size { return nil }
        if let announced = sink.wholeLength, Int64(body.count) != announced { return nil }
        return body
    }
}
