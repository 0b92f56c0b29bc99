using System.Buffers.Binary;
using System.Text.Json;
using Kvq.Tensors.Quant;

namespace Kvq.Formats.Safetensors;

/// <summary>
/// One .safetensors file, memory-mapped: an 8-byte little-endian header length N, N bytes of JSON (tensor name ->
/// dtype, shape, data_offsets relative to byte 8+N; optional "__metadata__" of strings), then the tensor data.
/// The header is parsed and validated on open; tensor data stays in the map. Every malformed input raises
/// <see cref="ModelFormatException"/>.
/// </summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    /// <summary>The reference implementation refuses headers above 100 MB; so do we (a corrupt length is usually huge).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private readonly Dictionary<string, SafetensorsTensorInfo> _byName;

    internal MappedFile Map { get; }
    public string Path => Map.Path;
    public long Length => Map.Length;
    /// <summary>File offset of the first data byte (8 + header length).</summary>
    public long DataStart { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }
    /// <summary>Tensors in header order.</summary>
    public IReadOnlyList<SafetensorsTensorInfo> Tensors { get; }

    private SafetensorsFile(MappedFile map, long dataStart, Dictionary<string, string> metadata, List<SafetensorsTensorInfo> tensors)
    {
        Map = map;
        DataStart = dataStart;
        Metadata = metadata;
        Tensors = tensors;
        _byName = new Dictionary<string, SafetensorsTensorInfo>(StringComparer.Ordinal);
        foreach (var t in tensors) _byName[t.Name] = t;
    }

    public static SafetensorsFile Open(string path)
    {
        var map = new MappedFile(path);
        try { return Parse(map); }
        catch { map.Dispose(); throw; }
    }

    private static SafetensorsFile Parse(MappedFile map)
    {
        string path = map.Path;
        if (map.Length < 8)
            throw new ModelFormatException(path, "header length", 0, $"expected an 8-byte header length, found a {map.Length}-byte file");
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(map.Span(0, 8));
        long room = map.Length - 8;
        if (n < 2 || n > (ulong)room || n > MaxHeaderBytes)
            throw new ModelFormatException(path, "header length", 0,
                $"expected a JSON header of 2..{Math.Min(room, MaxHeaderBytes)} bytes (the file has {map.Length}), found {n} (truncated or not a safetensors file?)");
        long dataStart = 8 + (long)n;
        long dataLength = map.Length - dataStart;

        using var json = JsonSource.Parse(path, "header JSON", map.Span(8, (int)n).ToArray(), 8);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        var tensors = new List<SafetensorsTensorInfo>();
        foreach (var prop in json.Root.EnumerateObject())
        {
            string name = prop.Name;
            long at = json.OffsetOf(name);
            if (name == "__metadata__")
            {
                if (prop.Value.ValueKind != JsonValueKind.Object)
                    throw new ModelFormatException(path, "'__metadata__'", at, $"expected an object of strings, found {JsonSource.Describe(prop.Value)}");
                // The format says string -> string; keep other values as their JSON text rather than refuse the file.
                foreach (var m in prop.Value.EnumerateObject())
                    metadata[m.Name] = m.Value.ValueKind == JsonValueKind.String ? m.Value.GetString()! : m.Value.GetRawText();
                continue;
            }
            tensors.Add(ParseTensor(path, name, prop.Value, at, dataStart, dataLength, map.Length));
        }
        return new SafetensorsFile(map, dataStart, metadata, tensors);
    }

    private static SafetensorsTensorInfo ParseTensor(string path, string name, JsonElement e, long at, long dataStart, long dataLength, long fileLength)
    {
        string item = $"tensor '{name}'";
        ModelFormatException Error(string msg) => new(path, item, at, msg);
        if (e.ValueKind != JsonValueKind.Object)
            throw Error($"expected an object with dtype, shape and data_offsets, found {JsonSource.Describe(e)}");

        if (!e.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String)
            throw Error($"expected a string 'dtype', found {(dt.ValueKind == JsonValueKind.Undefined ? "none" : JsonSource.Describe(dt))}");
        string dtype = dt.GetString()!;
        int elementBytes = SafetensorsDType.ElementBytes(dtype)
            ?? throw Error($"unknown dtype '{dtype}' (expected one of {SafetensorsDType.Known})");

        var shape = Integers(e, "shape", -1, Error);
        var offsets = Integers(e, "data_offsets", 2, Error);
        long begin = offsets[0], end = offsets[1];
        if (begin > end) throw Error($"expected data_offsets [begin, end] with begin <= end, found [{begin}, {end}]");

        Int128 bytes = elementBytes;
        foreach (var d in shape)
        {
            bytes *= d;   // both factors < 2^63: no Int128 wrap-around
            if (bytes > long.MaxValue) throw Error($"expected a shape that fits in a file, found {dtype} {ShapeText(shape)}");
        }
        if (end - begin != bytes)
            throw Error($"expected data_offsets spanning {bytes} bytes ({dtype} {ShapeText(shape)}), found [{begin}, {end}) = {end - begin} bytes");
        if (end > dataLength)
            throw Error($"expected data inside the file, found data [{dataStart + begin}, {dataStart + end}) (data_offsets [{begin}, {end}) " +
                $"after the {dataStart}-byte header) past its end at {fileLength} bytes (truncated?)");
        return new SafetensorsTensorInfo(name, dtype, shape, dataStart + begin, end - begin, at);
    }

    private static long[] Integers(JsonElement e, string key, int count, Func<string, ModelFormatException> error)
    {
        if (!e.TryGetProperty(key, out var a) || a.ValueKind != JsonValueKind.Array)
            throw error($"expected an array '{key}', found {(a.ValueKind == JsonValueKind.Undefined ? "none" : JsonSource.Describe(a))}");
        if (count >= 0 && a.GetArrayLength() != count)
            throw error($"expected '{key}' to hold {count} integers, found {a.GetArrayLength()}");
        var r = new long[a.GetArrayLength()];
        int i = 0;
        foreach (var v in a.EnumerateArray())
        {
            if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out r[i]) || r[i] < 0)
                throw error($"expected '{key}' to hold non-negative integers, found {JsonSource.Describe(v)} at index {i}");
            i++;
        }
        return r;
    }

    internal static string ShapeText(long[] shape) => "[" + string.Join(", ", shape) + "]";

    public bool HasTensor(string name) => _byName.ContainsKey(name);

    public SafetensorsTensorInfo? TryTensor(string name) => _byName.GetValueOrDefault(name);

    public SafetensorsTensorInfo Tensor(string name) => _byName.TryGetValue(name, out var t) ? t
        : throw new ModelFormatException(Path, $"tensor '{name}'", 8, "required tensor is missing");

    /// <summary>Pointer to a tensor's first byte in the map (valid while this file is open).</summary>
    public byte* TensorPointer(SafetensorsTensorInfo t) => Map.Pointer + t.DataOffset;

    /// <summary>A tensor of dtype F32, F16 or BF16 decoded to f32 (a copy: for norms and biases).</summary>
    public float[] ReadFloats(SafetensorsTensorInfo t)
    {
        var type = SafetensorsDType.ToGgml(t.DType)
            ?? throw new ModelFormatException(Path, $"tensor '{t.Name}'", t.HeaderOffset, $"expected dtype {SafetensorsDType.Supported}, found {t.DType}");
        var v = new float[t.Elements];
        RowKernels.Dequantize(type, TensorPointer(t), v);
        return v;
    }

    public void Dispose() => Map.Dispose();
}
