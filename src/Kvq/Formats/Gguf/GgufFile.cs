using System.Text;
using Kvq.Tensors;

namespace Kvq.Formats.Gguf;

/// <summary>
/// A GGUF v2/v3 file, memory-mapped. The header (metadata and tensor table) is parsed and validated on open;
/// tensor data stays in the map. Every malformed input raises <see cref="ModelFormatException"/>.
/// </summary>
public sealed unsafe class GgufFile : IDisposable
{
    public const uint Magic = 0x46554747; // "GGUF" little-endian
    /// <summary>Largest accepted general.alignment (bytes).</summary>
    public const long MaxAlignment = 1L << 30;
    /// <summary>Largest accepted element count of one tensor (2^56: byte sizes stay far from overflow).</summary>
    public const long MaxElements = 1L << 56;
    /// <summary>Deepest accepted nesting of metadata arrays (arrays of arrays): deeper input would exhaust the stack.</summary>
    public const int MaxArrayDepth = 8;
    private readonly MappedFile _file;
    private readonly Dictionary<string, GgufTensorInfo> _byName;
    private readonly Dictionary<string, long> _keyOffsets;

    public string Path => _file.Path;
    public uint Version { get; }
    public IReadOnlyDictionary<string, object> Metadata { get; }
    /// <summary>Metadata keys in file order, with their GGUF types.</summary>
    public IReadOnlyList<(string Key, GgufValueType Type)> MetadataTypes { get; }
    public IReadOnlyList<GgufTensorInfo> Tensors { get; }
    public long DataStart { get; }
    public long FileLength => _file.Length;

    private GgufFile(MappedFile file, uint version, Dictionary<string, object> md, List<(string, GgufValueType)> types,
        Dictionary<string, long> keyOffsets, List<GgufTensorInfo> tensors, long dataStart)
    {
        _file = file;
        _keyOffsets = keyOffsets;
        Version = version;
        Metadata = md;
        MetadataTypes = types;
        Tensors = tensors;
        DataStart = dataStart;
        _byName = new Dictionary<string, GgufTensorInfo>(StringComparer.Ordinal);
        foreach (var t in tensors) _byName[t.Name] = t;
    }

    public static GgufFile Open(string path)
    {
        var file = new MappedFile(path);
        try { return Parse(file); }
        catch { file.Dispose(); throw; }
    }

    private static GgufFile Parse(MappedFile file)
    {
        var r = new Reader(file);
        uint magic = r.U32("magic");
        if (magic != Magic)
            throw r.Error("magic", 0, $"expected 'GGUF' (0x{Magic:X8}), found 0x{magic:X8}");
        uint version = r.U32("version");
        if (version is not (2 or 3))
            throw r.Error("version", 4, $"expected GGUF version 2 or 3, found {version}");
        long tensorCount = r.Count("tensor_count", 24);
        long kvCount = r.Count("metadata_kv_count", 8);

        var md = new Dictionary<string, object>(StringComparer.Ordinal);
        var keyAt = new Dictionary<string, long>(StringComparer.Ordinal);
        var types = new List<(string, GgufValueType)>();
        for (long i = 0; i < kvCount; i++)
        {
            long at = r.Pos;
            string key = r.Str($"metadata key #{i}");
            var type = (GgufValueType)r.U32($"type of '{key}'");
            object value = r.Value(type, key, at);
            if (!md.TryAdd(key, value)) throw r.Error($"metadata '{key}'", at, "duplicate key");
            keyAt[key] = at;
            types.Add((key, type));
        }

        long alignment = 32;
        if (md.TryGetValue("general.alignment", out var al))
        {
            // Any integer type is accepted (the spec says uint32); anything else is a format error, not a cast error.
            alignment = al switch
            {
                byte b => b,
                sbyte sb => sb,
                ushort us => us,
                short sh => sh,
                uint ui => ui,
                int i => i,
                long l => l,
                ulong ul => ul > long.MaxValue ? -1 : (long)ul,
                _ => throw r.Error("general.alignment", keyAt["general.alignment"], $"expected an integer, found {al.GetType().Name}"),
            };
            if (alignment <= 0 || alignment > MaxAlignment || (alignment & (alignment - 1)) != 0)
                throw r.Error("general.alignment", keyAt["general.alignment"],
                    $"expected a power of two up to {MaxAlignment}, found {alignment}");
        }

        var infos = new List<(string Name, long[] Dims, long Elements, uint Type, long Offset, long HeaderOffset)>();
        for (long i = 0; i < tensorCount; i++)
        {
            long at = r.Pos;
            string name = r.Str($"tensor #{i} name");
            uint nDims = r.U32($"tensor '{name}' n_dims");
            if (nDims is 0 or > 4) throw r.Error($"tensor '{name}'", at, $"expected 1..4 dimensions, found {nDims}");
            var dims = new long[nDims];
            long elements = 1;
            for (int d = 0; d < nDims; d++)
            {
                ulong v = r.U64($"tensor '{name}' dim {d}");
                if (v == 0 || v > (1UL << 40)) throw r.Error($"tensor '{name}'", at, $"dimension {d} is {v}");
                dims[d] = (long)v;
                // Bounded so that element and byte counts can never overflow a long (GgufTensorInfo multiplies them).
                if (elements > MaxElements / (long)v)
                    throw r.Error($"tensor '{name}'", at, $"shape [{string.Join(", ", dims[..(d + 1)])}...] has more than {MaxElements} elements");
                elements *= (long)v;
            }
            uint type = r.U32($"tensor '{name}' type");
            ulong off = r.U64($"tensor '{name}' offset");
            infos.Add((name, dims, elements, type, (long)Math.Min(off, long.MaxValue), at));
        }

        long dataStart = (r.Pos + alignment - 1) / alignment * alignment;
        var tensors = new List<GgufTensorInfo>(infos.Count);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, dims, elements, typeId, offset, at) in infos)
        {
            var type = (GgmlType)typeId;
            if (!seen.Add(name)) throw r.Error($"tensor '{name}'", at, "duplicate tensor name");
            if (!GgmlTypeInfo.IsSupported(type))
                throw r.Error($"tensor '{name}'", at, $"unsupported tensor type {typeId} ({type})");
            if (dims[0] % GgmlTypeInfo.BlockSize(type) != 0)
                throw r.Error($"tensor '{name}'", at,
                    $"row length {dims[0]} is not a multiple of the {type} block size {GgmlTypeInfo.BlockSize(type)}");
            if (offset % alignment != 0)
                throw r.Error($"tensor '{name}'", at, $"data offset {offset} is not aligned to {alignment}");
            // offset <= long.MaxValue and byteSize <= 4 * 2^56: compare without forming sums that could wrap.
            long byteSize = GgmlTypeInfo.RowBytes(type, dims[0]) * (elements / dims[0]);
            if (offset > file.Length - dataStart || byteSize > file.Length - dataStart - offset)
                throw r.Error($"tensor '{name}'", at,
                    $"data at offset {offset} (+{dataStart}) of {byteSize} bytes lies outside the file ({file.Length} bytes)");
            var info = new GgufTensorInfo(name, dims, type, dataStart + offset, at);
            tensors.Add(info);
        }
        return new GgufFile(file, version, md, types, keyAt, tensors, dataStart);
    }

    public bool HasTensor(string name) => _byName.ContainsKey(name);

    public GgufTensorInfo Tensor(string name) =>
        _byName.TryGetValue(name, out var t) ? t
            : throw new ModelFormatException(Path, $"tensor '{name}'", DataStart, "required tensor is missing");

    public GgufTensorInfo? TryTensor(string name) => _byName.GetValueOrDefault(name);

    /// <summary>Pointer to a tensor's first byte in the map (valid while this file is open).</summary>
    public byte* TensorPointer(GgufTensorInfo t) => _file.Pointer + t.DataOffset;

    // ---- typed metadata access; a wrong type is a format error naming the key ----

    public bool Has(string key) => Metadata.ContainsKey(key);

    public string GetString(string key) => Get<string>(key);
    public string? TryGetString(string key) => Metadata.TryGetValue(key, out var v) ? v as string : null;

    public long GetInt(string key) => TryGetInt(key) ?? throw Missing(key);
    public long? TryGetInt(string key) => Metadata.TryGetValue(key, out var v) ? v switch
    {
        byte b => b,
        sbyte sb => sb,
        ushort us => us,
        short s => s,
        uint ui => ui,
        int i => i,
        ulong ul => (long)ul,
        long l => l,
        bool bo => bo ? 1 : 0,
        _ => throw new ModelFormatException(Path, $"metadata '{key}'", KeyOffset(key), $"expected an integer, found {v.GetType().Name}"),
    } : null;

    public double? TryGetFloat(string key) => Metadata.TryGetValue(key, out var v) ? v switch
    {
        float f => f,
        double d => d,
        byte or sbyte or ushort or short or uint or int or ulong or long => Convert.ToDouble(v),
        _ => throw new ModelFormatException(Path, $"metadata '{key}'", KeyOffset(key), $"expected a number, found {v.GetType().Name}"),
    } : null;

    public bool? TryGetBool(string key) => Metadata.TryGetValue(key, out var v) ? v switch
    {
        bool b => b,
        _ => throw new ModelFormatException(Path, $"metadata '{key}'", KeyOffset(key), $"expected a bool, found {v.GetType().Name}"),
    } : null;

    public T Get<T>(string key) => Metadata.TryGetValue(key, out var v)
        ? v is T t ? t : throw new ModelFormatException(Path, $"metadata '{key}'", KeyOffset(key),
            $"expected {typeof(T).Name}, found {v.GetType().Name}")
        : throw Missing(key);

    public T? TryGet<T>(string key) where T : class => Metadata.TryGetValue(key, out var v)
        ? v as T ?? throw new ModelFormatException(Path, $"metadata '{key}'", KeyOffset(key),
            $"expected {typeof(T).Name}, found {v.GetType().Name}")
        : null;

    /// <summary>Byte offset of a metadata key's entry in the file (0 if absent).</summary>
    public long KeyOffset(string key) => _keyOffsets.GetValueOrDefault(key);

    private ModelFormatException Missing(string key) =>
        new(Path, $"metadata '{key}'", 0, "required key is missing");

    public void Dispose() => _file.Dispose();

    /// <summary>Bounds-checked little-endian cursor over the mapped header.</summary>
    private sealed class Reader(MappedFile file)
    {
        public long Pos;

        public ModelFormatException Error(string item, long at, string msg) => new(file.Path, item, at, msg);

        private ReadOnlySpan<byte> Take(long n, string item)
        {
            if (n < 0 || n > file.Length - Pos)
                throw Error(item, Pos, $"needs {n} bytes but the file ends at {file.Length} (truncated?)");
            if (n > int.MaxValue)
                throw Error(item, Pos, $"a single value of {n} bytes is larger than this reader supports (2 GiB)");
            var s = file.Span(Pos, (int)n);
            Pos += n;
            return s;
        }

        public uint U32(string item) => BitConverter.ToUInt32(Take(4, item));
        public ulong U64(string item) => BitConverter.ToUInt64(Take(8, item));

        /// <summary>A count whose items take at least <paramref name="minItemBytes"/> each: rejects counts the file cannot hold.</summary>
        public long Count(string item, long minItemBytes)
        {
            long at = Pos;
            ulong n = U64(item);
            if (n > (ulong)((file.Length - Pos) / Math.Max(1, minItemBytes) + 1))
                throw Error(item, at, $"count {n} cannot fit in the remaining {file.Length - Pos} bytes");
            if (n > (ulong)Array.MaxLength)
                throw Error(item, at, $"count {n} is more than an array can hold");
            return (long)n;
        }

        public string Str(string item) => Str(item, -1);

        /// <summary>A string; <paramref name="index"/> &gt;= 0 names element <paramref name="index"/> of array <paramref name="item"/> (built only on error).</summary>
        public string Str(string item, long index)
        {
            long at = Pos;
            if (file.Length - Pos < 8) throw Error(Name(item, index) + " length", Pos, $"needs 8 bytes but the file ends at {file.Length} (truncated?)");
            ulong len = BitConverter.ToUInt64(file.Span(Pos, 8));
            Pos += 8;
            if (len > (ulong)(file.Length - Pos) || len > int.MaxValue)
                throw Error(Name(item, index), at, $"string length {len} runs past the end of the file ({file.Length} bytes)");
            var s = Encoding.UTF8.GetString(file.Span(Pos, (int)len));
            Pos += (long)len;
            return s;
        }

        private static string Name(string item, long index) => index < 0 ? item : $"{item}[{index}]";

        public object Value(GgufValueType type, string key, long at) => type switch
        {
            GgufValueType.UInt8 => Take(1, key)[0],
            GgufValueType.Int8 => (sbyte)Take(1, key)[0],
            GgufValueType.UInt16 => BitConverter.ToUInt16(Take(2, key)),
            GgufValueType.Int16 => BitConverter.ToInt16(Take(2, key)),
            GgufValueType.UInt32 => U32(key),
            GgufValueType.Int32 => BitConverter.ToInt32(Take(4, key)),
            GgufValueType.Float32 => BitConverter.ToSingle(Take(4, key)),
            GgufValueType.Bool => Take(1, key)[0] != 0,
            GgufValueType.String => Str(key),
            GgufValueType.UInt64 => U64(key),
            GgufValueType.Int64 => BitConverter.ToInt64(Take(8, key)),
            GgufValueType.Float64 => BitConverter.ToDouble(Take(8, key)),
            GgufValueType.Array => ArrayValue(key, at, 1),
            _ => throw Error($"metadata '{key}'", at, $"unknown value type {(uint)type}"),
        };

        private object ArrayValue(string key, long at, int depth)
        {
            if (depth > MaxArrayDepth)
                throw Error($"metadata '{key}'", at, $"arrays nested deeper than {MaxArrayDepth} levels");
            var et = (GgufValueType)U32(key + " array type");
            long n = Count(key + " array length", et switch
            {
                GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.Bool => 1,
                GgufValueType.UInt16 or GgufValueType.Int16 => 2,
                GgufValueType.UInt64 or GgufValueType.Int64 or GgufValueType.Float64 or GgufValueType.String => 8,
                GgufValueType.Array => 12,
                _ => 4,
            });
            switch (et)
            {
                case GgufValueType.UInt8: return Take(n, key).ToArray();
                case GgufValueType.Int8: { var a = new sbyte[n]; Take(n, key).CopyTo(System.Runtime.InteropServices.MemoryMarshal.AsBytes(a.AsSpan())); return a; }
                case GgufValueType.Bool: { var s = Take(n, key); var a = new bool[n]; for (int i = 0; i < n; i++) a[i] = s[i] != 0; return a; }
                case GgufValueType.UInt16: return Cast<ushort>(n, 2, key);
                case GgufValueType.Int16: return Cast<short>(n, 2, key);
                case GgufValueType.UInt32: return Cast<uint>(n, 4, key);
                case GgufValueType.Int32: return Cast<int>(n, 4, key);
                case GgufValueType.Float32: return Cast<float>(n, 4, key);
                case GgufValueType.UInt64: return Cast<ulong>(n, 8, key);
                case GgufValueType.Int64: return Cast<long>(n, 8, key);
                case GgufValueType.Float64: return Cast<double>(n, 8, key);
                case GgufValueType.String: { var a = new string[n]; for (long i = 0; i < n; i++) a[i] = Str(key, i); return a; }
                case GgufValueType.Array: { var a = new object[n]; for (long i = 0; i < n; i++) a[i] = ArrayValue($"{key}[{i}]", Pos, depth + 1); return a; }
                default: throw Error($"metadata '{key}'", at, $"unknown array element type {(uint)et}");
            }
        }

        private T[] Cast<T>(long n, int size, string key) where T : unmanaged =>
            System.Runtime.InteropServices.MemoryMarshal.Cast<byte, T>(Take(n * size, key)).ToArray();
    }
}
