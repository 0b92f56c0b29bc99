using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Kvq.Cache.Codecs.LowRank;
using Kvq.Formats;
using Kvq.IO;

namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>
/// The binary profile format, version 1, 2 when low-rank bases are present, 3 when codebooks carry their calibration
/// errors (all little-endian):
/// <code>
/// "KVQPROF\0"                          8-byte magic
/// u32 version = 1
/// str model fingerprint                 (str = u16 byte length + UTF-8)
/// str text, str text sha256, i32 samples, i32 length, i32 sink tokens, u64 seed, u8 fisher
/// i32 layers, i32 kv heads, i32 head dim
/// i32 calibrations; each:
///   f64 outlier fraction (0 = dense only)
///   keys pre-RoPE:  f32 zero[layers*heads*dim], f32 range[layers*heads*dim]   ((layer, head, channel) order)
///   keys post-RoPE: the same
///   i32 codebooks; each: u8 stream, i32 layer, u8 bits, f32 qnorm scale, f32 qnorm offset, f32 level[2^bits]
/// version 2 only: low-rank bases (kvq calibrate --lowrank)
///   i64 calibration tokens; for keys then values, per (layer, head): f32 mean[dim], f32 eigenvalue[dim] (non-increasing,
///   >= 0), f32 eigenvector[dim*dim] (rows, orthonormal);
///   i32 latent calibrations; each: i32 rank R, then calibrations as above with head dim R (KVQuant fitted on the
///   rank-R latent of the keys, for lrR+nuq*)
/// version 3: as version 2, except that every codebook record ends with f64 sensitivity (the Fisher-weighted squared
///   error the codebook leaves on the calibration data, NaN = unknown; used by :mixed bit allocation), and the
///   low-rank section is preceded by u8 present (0 or 1)
/// version 4: as version 3, then, after the low-rank section, per calibration (in the order above) u8 keys rotated
///   [layers] and u8 values rotated[layers] (0 or 1): the layers whose side was fitted, and is stored, in the
///   Walsh-Hadamard-rotated basis (kvq calibrate --rotate auto)
/// version 5: as version 4 (the rotation flags always present), then f32 value margin: the per-token outlier margin the
///   codebooks were fitted at (kvq calibrate --value-margin; written only when it is not the default 1.5)
/// 32 bytes SHA-256 of everything above
/// </code>
/// The oldest version that holds the profile is written (no sensitivities and no bases: version 1, byte for byte as
/// before), so older builds still read what they can use.
/// Written atomically; any malformed or corrupted file is a <see cref="ModelFormatException"/> naming the item and offset.
/// </summary>
public static class KvQuantProfileFile
{
    public const int Version = 1;
    /// <summary>Version 1 plus the low-rank section.</summary>
    public const int VersionLowRank = 2;
    /// <summary>Codebook sensitivities; the low-rank section optional.</summary>
    public const int VersionSensitivity = 3;
    /// <summary>Version 3 plus the per-layer rotation flags of each calibration.</summary>
    public const int VersionRotation = 4;
    /// <summary>Version 4 plus the per-token outlier margin of the fit.</summary>
    public const int VersionMargin = 5;
    private static readonly byte[] Magic = "KVQPROF\0"u8.ToArray();
    private const int MaxString = 4096;
    private const int MaxDim = 1 << 16;

    public static void Write(KvQuantProfile p, string path)
    {
        var body = Body(p);
        var hash = SHA256.HashData(body);
        AtomicFile.Write(path, f =>
        {
            f.Write(body);
            f.Write(hash);
        });
    }

    /// <summary>SHA-256 (first 16 bytes, hex) of the profile as this build writes it: its identity for session files,
    /// equal for two profiles exactly when their saved files are.</summary>
    public static string ContentHash(KvQuantProfile p) => Convert.ToHexString(SHA256.HashData(Body(p)).AsSpan(0, 16)).ToLowerInvariant();

    private static byte[] Body(KvQuantProfile p)
    {
        var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, Encoding.UTF8, leaveOpen: true))
        {
            w.Write(Magic);
            bool margin = p.Settings.ValueMargin != KvQuantSpec.ValueOutlierMargin;
            bool rot = margin || p.Calibrations.Any(c => c.RotatesAny);
            bool sens = rot || HasSensitivities(p);
            w.Write((uint)(margin ? VersionMargin : rot ? VersionRotation : sens ? VersionSensitivity : p.LowRank == null ? Version : VersionLowRank));
            Str(w, p.ModelFingerprint);
            var s = p.Settings;
            Str(w, s.Text);
            Str(w, s.TextSha256);
            w.Write(s.Samples);
            w.Write(s.Length);
            w.Write(s.SinkTokens);
            w.Write(s.Seed);
            w.Write((byte)(s.Fisher ? 1 : 0));
            w.Write(p.Layers);
            w.Write(p.KvHeads);
            w.Write(p.HeadDim);
            WriteCalibrations(w, p.Calibrations, sens);
            if (sens) w.Write((byte)(p.LowRank == null ? 0 : 1));
            if (p.LowRank is { } lr) WriteLowRank(w, lr, sens);
            if (rot)
                foreach (var c in p.Calibrations)
                    foreach (var side in new[] { KvSide.Key, KvSide.Value })
                        for (int l = 0; l < p.Layers; l++)
                            w.Write((byte)(c.Rotates(side, l) ? 1 : 0));
            if (margin) w.Write(p.Settings.ValueMargin);
        }
        return ms.ToArray();
    }

    private static bool HasSensitivities(KvQuantProfile p)
    {
        static bool Any(IEnumerable<KvQuantCalibration> cals) =>
            cals.Any(c => c.Codebooks.Any(b => !double.IsNaN(b.Codebook.Sensitivity)));
        return Any(p.Calibrations) || (p.LowRank?.Latent.Any(l => Any(l.Calibrations)) ?? false);
    }

    private static void WriteCalibrations(BinaryWriter w, IReadOnlyList<KvQuantCalibration> calibrations, bool sensitivities)
    {
        w.Write(calibrations.Count);
        foreach (var c in calibrations)
        {
            w.Write(c.OutlierFraction);
            foreach (var scales in new[] { c.KeysPreRope, c.KeysPostRope })
            {
                foreach (var z in scales.Zero) w.Write(z);
                foreach (var r in scales.Range) w.Write(r);
            }
            var books = c.Codebooks.ToList();
            w.Write(books.Count);
            foreach (var (stream, layer, book) in books)
            {
                w.Write((byte)stream);
                w.Write(layer);
                w.Write((byte)book.Bits);
                w.Write(book.NormScale);
                w.Write(book.NormOffset);
                foreach (var l in book.Levels) w.Write(l);
                if (sensitivities) w.Write(book.Sensitivity);
            }
        }
    }

    private static void WriteLowRank(BinaryWriter w, LowRankBases lr, bool sensitivities)
    {
        w.Write(lr.Tokens);
        foreach (var side in new[] { KvSide.Key, KvSide.Value })
            for (int l = 0; l < lr.Layers; l++)
                for (int h = 0; h < lr.KvHeads; h++)
                {
                    var b = lr.For(side, l, h);
                    foreach (var x in b.Mean) w.Write(x);
                    foreach (var x in b.Eigenvalues) w.Write(x);
                    foreach (var x in b.Vectors) w.Write(x);
                }
        w.Write(lr.Latent.Count);
        foreach (var (rank, cals) in lr.Latent)
        {
            w.Write(rank);
            WriteCalibrations(w, cals, sensitivities);
        }
    }

    private static void Str(BinaryWriter w, string s)
    {
        var b = Encoding.UTF8.GetBytes(s);
        if (b.Length > MaxString) throw new ArgumentException($"profile string longer than {MaxString} bytes");
        w.Write((ushort)b.Length);
        w.Write(b);
    }

    public static KvQuantProfile Read(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"profile not found: {path}", path);
        var info = new FileInfo(path);
        if (info.Length > int.MaxValue) throw new ModelFormatException(path, "file", 0, $"{info.Length} bytes is too large for a profile");
        var data = File.ReadAllBytes(path);
        var r = new Reader(data, path);
        r.Need(Magic.Length + 4 + 32, "header");
        if (!data.AsSpan(0, Magic.Length).SequenceEqual(Magic))
            throw new ModelFormatException(path, "magic", 0, "not a KVQuant profile (expected \"KVQPROF\\0\")");
        r.Skip(Magic.Length);
        uint version = r.U32("version");
        if (version is not (Version or VersionLowRank or VersionSensitivity or VersionRotation or VersionMargin))
            throw new ModelFormatException(path, "version", 8,
                $"version {version} is not supported (this build reads versions {Version} to {VersionMargin})");
        int bodyLength = data.Length - 32;
        var expected = SHA256.HashData(data.AsSpan(0, bodyLength));
        if (!expected.AsSpan().SequenceEqual(data.AsSpan(bodyLength)))
            throw new ModelFormatException(path, "checksum", bodyLength, "SHA-256 of the contents does not match: the file is corrupted or truncated");
        r.End = bodyLength;
        try
        {
            return Parse(r, (int)version);
        }
        catch (ArgumentException e) when (e is not KvSpecException)
        {
            throw new ModelFormatException(path, "contents", r.Offset, e.Message, e);
        }
    }

    private static KvQuantProfile Parse(Reader r, int version)
    {
        string fingerprint = r.Str("model fingerprint");
        string text = r.Str("text");
        string sha = r.Str("text sha256");
        int samples = r.I32("samples", 0, int.MaxValue);
        int length = r.I32("length", 0, int.MaxValue);
        int sink = r.I32("sink tokens", 0, int.MaxValue);
        ulong seed = r.U64("seed");
        byte fisher = r.U8("fisher");
        if (fisher > 1) r.Fail("fisher", $"flag is {fisher}, expected 0 or 1");
        int layers = r.I32("layers", 1, MaxDim);
        int heads = r.I32("kv heads", 1, MaxDim);
        int dim = r.I32("head dim", 1, MaxDim);
        bool sens = version >= VersionSensitivity;
        var calibrations = ReadCalibrations(r, layers, heads, dim, sens);
        bool lowRank = version == VersionLowRank;
        if (sens)
        {
            long at = r.Offset;
            byte present = r.U8("low-rank present");
            if (present > 1) r.Fail("low-rank present", $"flag is {present}, expected 0 or 1", at);
            lowRank = present == 1;
        }
        var bases = lowRank ? ReadLowRank(r, layers, heads, dim, sens) : null;
        if (version >= VersionRotation) calibrations = ReadRotation(r, calibrations, layers);
        float margin = KvQuantSpec.ValueOutlierMargin;
        if (version >= VersionMargin)
        {
            long at = r.Offset;
            margin = r.F32("value margin");
            if (!(margin > 0 && margin <= 100)) r.Fail("value margin", $"{margin} is outside (0, 100] half-ranges", at);
        }
        if (r.Offset != r.End) r.Fail("end", $"{r.End - r.Offset} unexpected bytes before the checksum");
        var settings = new KvQuantCalibrationSettings(text, sha, samples, length, sink, seed, fisher == 1, margin);
        return new KvQuantProfile(fingerprint, settings, layers, heads, dim, calibrations, bases);
    }

    private static List<KvQuantCalibration> ReadCalibrations(Reader r, int layers, int heads, int dim, bool sensitivities)
    {
        long perScales = (long)layers * heads * dim;
        int count = r.I32("calibrations", 1, 64);
        var calibrations = new List<KvQuantCalibration>();
        for (int i = 0; i < count; i++)
        {
            long at = r.Offset;
            double fraction = r.F64("outlier fraction");
            if (!(fraction >= 0 && fraction < 0.5)) r.Fail("outlier fraction", $"{fraction} is outside [0, 0.5)", at);
            var pre = Scales(r, layers, heads, dim, perScales, "keys pre-RoPE");
            var post = Scales(r, layers, heads, dim, perScales, "keys post-RoPE");
            int books = r.I32("codebooks", 0, KvQuantStreams.All.Length * layers * KvQuantProfile.BitWidths.Length);
            var list = new List<(KvQuantStream, int, NuqCodebook)>(books);
            for (int b = 0; b < books; b++)
            {
                at = r.Offset;
                byte stream = r.U8("codebook stream");
                if (stream > (byte)KvQuantStream.Value) r.Fail("codebook stream", $"stream {stream} is unknown", at);
                int layer = r.I32("codebook layer", 0, layers - 1);
                byte bits = r.U8("codebook bits");
                if (bits < 1 || bits > 8) r.Fail("codebook bits", $"{bits} bits", at);
                float scale = r.F32("codebook qnorm scale"), offset = r.F32("codebook qnorm offset");
                var levels = new float[1 << bits];
                for (int k = 0; k < levels.Length; k++) levels[k] = r.F32("codebook level");
                double sensitivity = sensitivities ? r.F64("codebook sensitivity") : double.NaN;
                try
                {
                    list.Add(((KvQuantStream)stream, layer, new NuqCodebook(levels, scale, offset, sensitivity)));
                }
                catch (ArgumentException e)
                {
                    r.Fail("codebook", $"{((KvQuantStream)stream).Describe()} layer {layer}: {e.Message}", at);
                }
            }
            calibrations.Add(new KvQuantCalibration(fraction, pre, post, list));
        }
        return calibrations;
    }

    private static List<KvQuantCalibration> ReadRotation(Reader r, List<KvQuantCalibration> calibrations, int layers)
    {
        var result = new List<KvQuantCalibration>(calibrations.Count);
        foreach (var c in calibrations)
        {
            var sides = new List<int>[2];
            for (int s = 0; s < 2; s++)
            {
                sides[s] = [];
                for (int l = 0; l < layers; l++)
                {
                    long at = r.Offset;
                    string item = $"{(s == 0 ? "key" : "value")} rotation flag of layer {l}";
                    byte f = r.U8(item);
                    if (f > 1) r.Fail(item, $"flag is {f}, expected 0 or 1", at);
                    if (f == 1) sides[s].Add(l);
                }
            }
            result.Add(new KvQuantCalibration(c.OutlierFraction, c.KeysPreRope, c.KeysPostRope, c.Codebooks, sides[0], sides[1]));
        }
        return result;
    }

    private static LowRankBases ReadLowRank(Reader r, int layers, int heads, int dim, bool sensitivities)
    {
        long at = r.Offset;
        long tokens = (long)r.U64("low-rank tokens");
        if (tokens < 1) r.Fail("low-rank tokens", $"{tokens} calibration tokens", at);
        double bytes = 2.0 * layers * heads * (2.0 * dim + (double)dim * dim) * 4; // double: the product can pass 2^63 for hostile counts
        if (bytes > r.End - r.Offset) r.Fail("low-rank bases", $"needs {bytes} bytes, {r.End - r.Offset} left: the file is truncated");
        var all = new[] { new LowRankBasis[layers * heads], new LowRankBasis[layers * heads] };
        for (int s = 0; s < 2; s++)
            for (int i = 0; i < layers * heads; i++)
            {
                at = r.Offset;
                string item = $"low-rank {(s == 0 ? "key" : "value")} basis of layer {i / heads} head {i % heads}";
                var mean = new float[dim];
                var eig = new float[dim];
                var vec = new float[dim * dim];
                for (int c = 0; c < dim; c++) mean[c] = r.F32(item);
                for (int c = 0; c < dim; c++) eig[c] = r.F32(item);
                for (int c = 0; c < dim * dim; c++) vec[c] = r.F32(item);
                try
                {
                    all[s][i] = new LowRankBasis(mean, eig, vec);
                }
                catch (ArgumentException e)
                {
                    r.Fail(item, e.Message, at);
                }
            }
        int latents = r.I32("latent calibrations", 0, dim);
        var latent = new List<(int, IReadOnlyList<KvQuantCalibration>)>();
        for (int i = 0; i < latents; i++)
        {
            at = r.Offset;
            int rank = r.I32("latent rank", 1, dim);
            if (latent.Exists(e => e.Item1 == rank)) r.Fail("latent rank", $"rank {rank} appears twice", at);
            latent.Add((rank, ReadCalibrations(r, layers, heads, rank, sensitivities)));
        }
        return new LowRankBases(layers, heads, dim, tokens, all[0], all[1], latent);
    }

    private static ChannelScales Scales(Reader r, int layers, int heads, int dim, long n, string item)
    {
        long at = r.Offset;
        r.Need(n * 8, item);
        var zero = new float[n];
        var range = new float[n];
        for (long i = 0; i < n; i++) zero[i] = r.F32(item);
        for (long i = 0; i < n; i++) range[i] = r.F32(item);
        try
        {
            return new ChannelScales(layers, heads, dim, zero, range);
        }
        catch (ArgumentException e)
        {
            throw new ModelFormatException(r.Path, item, at, e.Message);
        }
    }

    /// <summary>Bounds-checked little-endian reads that name the item and offset on failure.</summary>
    private sealed class Reader(byte[] data, string path)
    {
        public int Offset;
        public int End = data.Length;
        public string Path => path;

        public void Need(long bytes, string item)
        {
            if (bytes < 0 || Offset + bytes > End)
                throw new ModelFormatException(path, item, Offset, $"needs {bytes} bytes, {End - Offset} left: the file is truncated");
        }

        public void Skip(int n) { Need(n, "header"); Offset += n; }

        public void Fail(string item, string message, long at = -1) =>
            throw new ModelFormatException(path, item, at < 0 ? Offset : at, message);

        private ReadOnlySpan<byte> Take(int n, string item)
        {
            Need(n, item);
            var s = data.AsSpan(Offset, n);
            Offset += n;
            return s;
        }

        public byte U8(string item) => Take(1, item)[0];
        public uint U32(string item) => BinaryPrimitives.ReadUInt32LittleEndian(Take(4, item));
        public ulong U64(string item) => BinaryPrimitives.ReadUInt64LittleEndian(Take(8, item));
        public double F64(string item) => BinaryPrimitives.ReadDoubleLittleEndian(Take(8, item));

        public float F32(string item)
        {
            long at = Offset;
            float v = BinaryPrimitives.ReadSingleLittleEndian(Take(4, item));
            if (!float.IsFinite(v)) Fail(item, $"value {v} is not finite", at);
            return v;
        }

        public int I32(string item, int min, int max)
        {
            long at = Offset;
            int v = BinaryPrimitives.ReadInt32LittleEndian(Take(4, item));
            if (v < min || v > max) Fail(item, $"{v} is outside [{min}, {max}]", at);
            return v;
        }

        public string Str(string item)
        {
            long at = Offset;
            int n = BinaryPrimitives.ReadUInt16LittleEndian(Take(2, item));
            if (n > MaxString) Fail(item, $"string of {n} bytes (at most {MaxString})", at);
            try
            {
                return new UTF8Encoding(false, true).GetString(Take(n, item));
            }
            catch (DecoderFallbackException)
            {
                Fail(item, "invalid UTF-8", at);
                return "";
            }
        }
    }
}
