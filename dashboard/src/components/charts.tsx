/** Small SVG charts: no chart library, so the routes that show them stay light. */
export interface Series {
  name: string;
  colour: string;
  points: { x: string; y: number | null }[];
}

const W = 640;
const H = 220;
const PAD = { left: 48, right: 12, top: 12, bottom: 28 };

function scale(values: number[]) {
  const max = Math.max(0, ...values);
  const min = Math.min(0, ...values);
  return { min, max: max === min ? min + 1 : max };
}

function path(points: { x: number; y: number | null }[]) {
  let d = "";
  let pen = false;
  for (const p of points) {
    if (p.y === null) {
      pen = false;
      continue;
    }
    d += `${pen ? "L" : "M"}${p.x.toFixed(1)},${p.y.toFixed(1)}`;
    pen = true;
  }
  return d;
}

export function LineChart({
  title,
  series,
  format = (v: number) => v.toLocaleString("en-US", { maximumFractionDigits: 2 }),
}: {
  title: string;
  series: Series[];
  format?: (v: number) => string;
}) {
  const labels = series[0]?.points.map((p) => p.x) ?? [];
  const values = series.flatMap((s) => s.points.map((p) => p.y).filter((v): v is number => v !== null));
  const { min, max } = scale(values);
  const n = Math.max(1, labels.length - 1);
  const x = (i: number) => PAD.left + ((W - PAD.left - PAD.right) * i) / n;
  const y = (v: number) => PAD.top + (H - PAD.top - PAD.bottom) * (1 - (v - min) / (max - min));
  const total = values.reduce((a, b) => a + b, 0);
  const summary = `${title}: ${labels.length} points, ${series.map((s) => s.name).join(", ")}; sum ${format(total)}`;
  const tick = Math.max(1, Math.ceil(labels.length / 6));
  return (
    <figure className="w-full" data-testid={`chart-${title}`} data-total={total}>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={summary} className="h-auto w-full">
        {[0, 0.5, 1].map((f) => {
          const v = min + (max - min) * f;
          return (
            <g key={f}>
              <line x1={PAD.left} x2={W - PAD.right} y1={y(v)} y2={y(v)} className="stroke-slate-200 dark:stroke-slate-700" />
              <text x={PAD.left - 6} y={y(v) + 4} textAnchor="end" className="fill-slate-600 text-[11px] dark:fill-slate-300">
                {format(v)}
              </text>
            </g>
          );
        })}
        {labels.map((label, i) =>
          i % tick === 0 ? (
            <text key={label} x={x(i)} y={H - 8} textAnchor="middle" className="fill-slate-600 text-[11px] dark:fill-slate-300">
              {label.slice(5, 10)}
            </text>
          ) : null,
        )}
        {series.map((s) => (
          <g key={s.name}>
            <path d={path(s.points.map((p, i) => ({ x: x(i), y: p.y === null ? null : y(p.y) })))} fill="none" stroke={s.colour} strokeWidth={2} />
            {s.points.map((p, i) =>
              p.y === null ? null : <circle key={p.x} cx={x(i)} cy={y(p.y)} r={2.5} fill={s.colour}><title>{`${s.name} ${p.x.slice(0, 10)}: ${format(p.y)}`}</title></circle>,
            )}
          </g>
        ))}
      </svg>
      {series.length > 1 && (
        <figcaption className="mt-1 flex flex-wrap gap-3 text-xs">
          {series.map((s) => (
            <span key={s.name} className="inline-flex items-center gap-1">
              <span aria-hidden className="inline-block h-2 w-4 rounded" style={{ background: s.colour }} />
              {s.name}
            </span>
          ))}
        </figcaption>
      )}
    </figure>
  );
}

export function Sparkline({ values, label }: { values: (number | null)[]; label: string }) {
  const w = 120;
  const h = 32;
  const nums = values.filter((v): v is number => v !== null);
  const { min, max } = scale(nums);
  const n = Math.max(1, values.length - 1);
  const d = path(values.map((v, i) => ({ x: (w * i) / n, y: v === null ? null : 2 + (h - 4) * (1 - (v - min) / (max - min)) })));
  return (
    <svg viewBox={`0 0 ${w} ${h}`} width={w} height={h} role="img" aria-label={label} className="text-blue-700 dark:text-blue-300">
      <path d={d} fill="none" stroke="currentColor" strokeWidth={1.5} />
    </svg>
  );
}
