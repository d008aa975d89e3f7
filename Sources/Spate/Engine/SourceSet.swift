import Synchronization

/// The sources of one download's bytes: the URL the user gave (index 0) and the mirrors that
/// describe the same file (`--mirror`, TAB-separated URLs on a manifest line), added as their
/// probes succeed, so a slow or dead mirror never holds up the start.
///
/// Ranges flow to the sources by measured throughput without a plan: worker `i` asks the
/// active sources in turn (`i` modulo their count), and a worker asks for its next range as
/// soon as its last one ends, so a source twice as fast serves about twice the ranges; the
/// request sizer gives a fast worker longer requests, and at the end idle workers steal from
/// (or hedge) the slow sources' requests. Each source's host has its own connection budget.
///
/// A source that keeps failing (`dropAfterFailures` of its own requests in a row, and one of
/// them the last a range could take) is dropped with a notice, and its bytes go to the others;
/// the last source's failure is the download's.
final class SourceSet: Sendable {
    struct Source: Sendable {
        let resolver: RemoteResolver
        /// Builds this source's requests: the user's headers go only to the user's URL's origin.
        let requests: RequestBuilder
    }

    private struct Entry {
        let source: Source
        var active = true
        /// Its requests that failed in a row (a success resets it).
        var failures = 0
    }

    private let entries: Mutex<[Entry]>

    /// Failures in a row after which a source whose range ran out of retries is dropped. Why
    /// not at once: a range's retry count travels with its bytes from source to source, so the
    /// request that spent the last retry may be the first failure of a healthy source.
    static let dropAfterFailures = 2

    init(_ primary: Source) {
        entries = Mutex([Entry(source: primary)])
    }

    /// Adds a mirror that passed its probe (`mismatch`).
    func add(_ source: Source) {
        entries.withLock { $0.append(Entry(source: source)) }
    }

    /// The source of worker `worker`'s next request, and its index.
    func source(for worker: Int) -> (index: Int, source: Source) {
        entries.withLock { e in
            let indices = e.indices.filter { e[$0].active }
            let index = indices.isEmpty ? 0 : indices[worker % indices.count]
            return (index, e[index].source)
        }
    }

    func source(_ index: Int) -> Source { entries.withLock { $0[index].source } }

    func isActive(_ index: Int) -> Bool { entries.withLock { $0[index].active } }

    /// How many sources are in use.
    var activeCount: Int { entries.withLock { $0.filter(\.active).count } }

    /// A request to source `index` ended: `failed` when the source is to blame (not a
    /// throttling reply, which the host budget handles, nor a local failure).
    func record(_ index: Int, failed: Bool) {
        entries.withLock { e in e[index].failures = failed ? e[index].failures + 1 : 0 }
    }

    enum Drop: Equatable {
        /// Dropped now (say so once).
        case dropped
        /// Dropped before (a request that was already on its way to it ended).
        case alreadyDropped
        /// Kept in use, and the range goes on (its bytes are pending again, with a fresh
        /// count): the source had not failed `dropAfterFailures` times in a row.
        case spared
        /// Kept: the error is the download's.
        case kept
    }

    /// A range fetched from source `index` ran out of retries with `error`. Kept when the
    /// error is not the source's fault (local I/O, a closed output, a checksum), when the URL
    /// the user gave saw its file change (the download starts over or stops, as without
    /// mirrors), or when it is the last source in use: then the error is the download's.
    func drop(_ index: Int, after error: SpateError) -> Drop {
        switch error.kind {
        case .network, .http, .invalidResponse: break
        case .remoteChanged where index != 0: break
        default: return .kept
        }
        return entries.withLock { e in
            guard e[index].active else { return .alreadyDropped }
            guard e.filter(\.active).count > 1 else { return .kept }
            guard e[index].failures >= Self.dropAfterFailures || error.kind == .remoteChanged else { return .spared }
            e[index].active = false
            return .dropped
        }
    }

    /// Why `mirror` cannot serve ranges of the file `primary` describes, or nil when it can.
    ///
    /// Same size, byte ranges, and the same version: the same strong ETag (else the same
    /// Last-Modified when neither has one). Mirrors on other servers often carry other
    /// validators for the same bytes; they are used only when `checksum` — a cryptographic
    /// digest that checks every byte before the file is published (the caller passes none
    /// for a stream, whose bytes reach the reader first, or for a CRC, which anyone can
    /// match) — and never when the mirror publishes a digest of the same kind that disagrees.
    static func mismatch(primary: RemoteFile, mirror: RemoteFile, checksum: Checksum?) -> String? {
        guard mirror.acceptsRanges else { return "it does not serve byte ranges" }
        guard mirror.size == primary.size else {
            return "it serves \(mirror.size.map { "\($0) bytes" } ?? "an unknown size"), the URL \(primary.size.map { "\($0) bytes" } ?? "an unknown size")"
        }
        for digest in mirror.serverDigests {
            let reference = checksum.map { [$0] } ?? primary.serverDigests.map(\.checksum)
            if let mine = reference.first(where: { $0.algorithm == digest.checksum.algorithm }), mine != digest.checksum {
                return "its \(digest.source) says \(digest.checksum), not \(mine)"
            }
        }
        if checksum != nil { return nil }
        if let etag = primary.strongETag, mirror.strongETag == etag { return nil }
        if primary.strongETag == nil, mirror.strongETag == nil, let date = primary.lastModified, mirror.lastModified == date {
            return nil
        }
        return "nothing shows it serves the same version (ETag \(mirror.strongETag ?? "none"), Last-Modified \(mirror.lastModified ?? "none"); the URL's \(primary.strongETag ?? primary.lastModified ?? "none")): give --checksum with a hash to use mirrors whose validators differ"
    }
}
