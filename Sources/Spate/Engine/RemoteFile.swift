/// What the probe learned about the remote file; every later response is checked against it.
public struct RemoteFile: Sendable, Hashable {
    /// The URL after redirects: every range is fetched from here.
    public var url: RemoteURL
    /// The representation's length, when known.
    public var size: Int64?
    /// Whether the server answered the probe's `Range` with 206.
    public var acceptsRanges: Bool
    /// The strong entity tag, if the server sent one (weak tags cannot validate byte ranges).
    public var strongETag: String?
    /// `Last-Modified`, used as the validator when there is no strong ETag.
    public var lastModified: String?
    /// `Content-Disposition`, for naming the output when asked.
    public var contentDisposition: String?
    /// Whole-file digests the server published (`ServerDigests`), best first.
    public var serverDigests: [ServerDigest] = []
    /// Digest headers seen but not checked (composite S3 checksums, CRCs), one line each.
    var digestNotices: [String] = []

    public init(url: RemoteURL, size: Int64?, acceptsRanges: Bool, strongETag: String?, lastModified: String?,
                contentDisposition: String? = nil) {
        self.url = url
        self.size = size
        self.acceptsRanges = acceptsRanges
        self.strongETag = strongETag
        self.lastModified = lastModified
        self.contentDisposition = contentDisposition
    }

    /// The value for `If-Range`: the strong ETag, else the date (RFC 9110 §13.1.5).
    public var ifRangeValidator: String? { strongETag ?? lastModified }

    /// Checks that a response's validators describe the same representation as the probe's.
    /// Returns a reason when they do not.
    func validatorMismatch(in head: ResponseHead) -> String? {
        if let strongETag {
            let etag = head["etag"]
            if etag != strongETag {
                return "ETag changed from \(strongETag) to \(etag ?? "none")"
            }
        } else if let lastModified {
            let date = head["last-modified"]
            if date != lastModified {
                return "Last-Modified changed from \(lastModified) to \(date ?? "none")"
            }
        }
        return nil
    }

    /// A strong ETag from a header value, or nil for weak or malformed tags.
    static func strongETag(from value: String?) -> String? {
        guard let value, value.hasPrefix("\""), value.hasSuffix("\""), value.count >= 2 else { return nil }
        return value
    }
}
