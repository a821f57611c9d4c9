/** Shapes of the HTTP contract the SDK reads and writes (API.md, Storefront). */
export interface Item {
  productId: string;
  name?: string | null;
  price?: number | null;
  currency?: string | null;
  imageUrl?: string | null;
  url?: string | null;
}

export interface Meta {
  strategy: string;
  placementId?: string | null;
  experimentId?: string | null;
  variant?: string | null;
  recommendationId: string;
}

export interface Answer {
  data: Item[];
  meta: Meta;
}

export interface Widget {
  layout?: string;
  columns?: number;
  showPrice?: boolean;
  ctaText?: string;
  maxItems?: number;
  theme?: { primaryColor?: string; fontFamily?: string | null };
}

export interface TrackEvent {
  eventType: string;
  userId?: string;
  productId: string;
  eventId?: string;
  timestamp?: string;
  sessionId?: string;
  metadata?: Record<string, unknown>;
}
